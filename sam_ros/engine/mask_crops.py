"""Masks as crops: each mask is its tight bounding box in the image and the bool pixels inside it.

The decoder's low-res logits say where a mask can be foreground (``transforms.mask_regions``);
``crops_from_low_res`` upsamples only that region of each mask, with the same arithmetic as the
full-frame ``transforms.postprocess_masks`` (so the pixels are identical and none is lost outside),
and computes area and stability score there. The cost grows with the masks' size, not with the
camera's resolution; a full-frame array is made only when a caller asks for one (``to_masks``).
"""
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np
import torch

from . import transforms
from .mask_utils import stability_from_counts


class MaskCrop(NamedTuple):
    """One mask: bbox (x, y, w, h) in image pixels (None when empty), the h x w bool pixels of
    that box (0 x 0 when empty), and the mask's area in pixels."""
    bbox: Optional[Tuple[int, int, int, int]]
    mask: np.ndarray
    area: int


def _object_array(items, shape) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, a in enumerate(items):
        out[i] = a
    return out.reshape(shape)


@dataclass
class MaskCrops:
    """A batch of masks (leading dims ``shape``, e.g. B x M) of an H x W image, as tight crops."""
    size: Tuple[int, int]   # (H, W) of the image
    boxes: np.ndarray       # ... x 4 int64 (x, y, w, h); all zero for an empty mask
    masks: np.ndarray       # ... object array of h x w bool (C-contiguous) arrays
    areas: np.ndarray       # ... int64

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.boxes.shape[:-1])

    def __getitem__(self, index) -> "MaskCrops":
        """Index the leading dims, as on an array of masks (an integer per dim gives shape ())."""
        boxes = self.boxes[index]
        masks = self.masks[index]
        if boxes.ndim == 1:  # one mask: numpy returned the element itself
            masks = _object_array([masks], ())
        return MaskCrops(self.size, boxes, masks, np.asarray(self.areas[index]))

    def crop(self, *index: int) -> MaskCrop:
        """The mask at `index` (one integer per leading dim)."""
        x, y, w, h = (int(v) for v in self.boxes[index])
        return MaskCrop((x, y, w, h) if w else None, self.masks[index], int(self.areas[index]))

    def mask(self, *index: int) -> np.ndarray:
        """The mask at `index` as a full H x W bool array."""
        out = np.zeros(self.size, bool)
        c = self.crop(*index)
        if c.bbox is not None:
            x, y, w, h = c.bbox
            out[y : y + h, x : x + w] = c.mask
        return out

    def to_masks(self) -> np.ndarray:
        """All masks as full-frame arrays: ... x H x W bool."""
        out = np.zeros((*self.shape, *self.size), bool)
        flat = out.reshape(-1, *self.size)
        for i, (box, m) in enumerate(zip(self.boxes.reshape(-1, 4), self.masks.reshape(-1))):
            x, y, w, h = (int(v) for v in box)
            flat[i, y : y + h, x : x + w] = m
        return out

    @staticmethod
    def from_masks(masks: np.ndarray) -> "MaskCrops":
        """... x H x W bool masks -> their crops."""
        masks = np.asarray(masks, dtype=bool)
        flat = masks.reshape(-1, *masks.shape[-2:])
        boxes = np.zeros((len(flat), 4), np.int64)
        crops = []
        for i, m in enumerate(flat):
            boxes[i] = cv2.boundingRect(np.ascontiguousarray(m).view(np.uint8))
            x, y, w, h = boxes[i]
            crops.append(np.ascontiguousarray(m[y : y + h, x : x + w]))
        areas = np.array([np.count_nonzero(c) for c in crops], np.int64)
        lead = masks.shape[:-2]
        return MaskCrops(tuple(masks.shape[-2:]), boxes.reshape(*lead, 4), _object_array(crops, lead),
                         areas.reshape(lead))


def tight_crop(mask: np.ndarray, x: int, y: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """A bool mask placed at (x, y) -> its tight box (x, y, w, h; zeros when empty), the pixels of
    that box (C-contiguous) and the area."""
    bx, by, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    crop = np.ascontiguousarray(mask[by : by + h, bx : bx + w])
    box = np.array([x + bx, y + by, w, h] if w else [0, 0, 0, 0], np.int64)
    return box, crop, int(np.count_nonzero(crop))


def crops_from_low_res(
    low_res: torch.Tensor, input_size: Tuple[int, int], original_size: Tuple[int, int], img_size: Optional[int],
    mask_threshold: float = 0.0, stability_offset: float = 1.0,
) -> Tuple[MaskCrops, np.ndarray]:
    """Low-res logits ... x L x L -> (the masks ``postprocess_masks(...) > mask_threshold`` as
    crops, their stability scores ... float32), without full-frame arrays.

    Each mask is upsampled only inside the region where its logits can exceed
    mask_threshold - |stability_offset| (``transforms.mask_regions``), so the pixels, areas and
    stability scores are exactly those of the full-frame computation.
    """
    lead = tuple(low_res.shape[:-2])
    flat = low_res.reshape(-1, *low_res.shape[-2:])
    n = flat.shape[0]
    h_img, w_img = original_size
    regions = transforms.mask_regions(flat, mask_threshold - abs(stability_offset), input_size, original_size,
                                      img_size)
    boxes = np.zeros((n, 4), np.int64)
    areas = np.zeros(n, np.int64)
    stab = np.zeros(n, dtype=np.float32)
    empty = np.zeros((0, 0), bool)
    crops = [empty] * n
    for i in np.flatnonzero(regions[:, 2] > regions[:, 0]):
        x0, y0, x1, y1 = (int(v) for v in regions[i])
        logits = transforms.postprocess_region(flat[i], (x0, y0, x1, y1), input_size, original_size, img_size)
        logits = logits.cpu().numpy()
        stab[i] = stability_from_counts(np.count_nonzero(logits > mask_threshold + stability_offset),
                                        np.count_nonzero(logits > mask_threshold - stability_offset), h_img * w_img)
        boxes[i], crops[i], areas[i] = tight_crop(logits > mask_threshold, x0, y0)
    return (MaskCrops((h_img, w_img), boxes.reshape(*lead, 4), _object_array(crops, lead), areas.reshape(lead)),
            stab.reshape(lead))
