"""Automatic mask generation ("segment everything"), the data engine's fully automatic stage.

A grid of foreground points is decoded in batches on one embedding; masks are kept when the
predicted IoU and the stability score pass their thresholds, duplicates are removed with box NMS,
optionally over several crop layers (each with its own NMS, then NMS across crops), optionally
followed by removal of small islands and holes. Same settings and numbers as Meta's
``SamAutomaticMaskGenerator``; faster because the embedding is never copied per prompt, the IoU
filter runs before masks are upscaled, and upscaling avoids the 1024 x 1024 intermediate.

``region`` restricts generation to a box of the image ("everything inside this box"): the grid
is laid over the box and masks are clipped to it; with ``embedding`` the frame's cached
embedding is reused (no encoder pass).
"""
import math
from dataclasses import dataclass
from itertools import product
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .mask_crops import tight_crop
from .mask_utils import (area_from_rle, batched_nms, crop_to_rle, encode_rle, mask_to_rle, masks_to_boxes,
                         remove_small_regions, rle_to_mask)
from .predictor import ImageEmbedding, SamPredictor


def build_point_grid(n_per_side: int) -> np.ndarray:
    """n^2 x 2 points (x, y) at the centres of an n x n grid over [0, 1]^2, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> List[np.ndarray]:
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: Tuple[int, int], n_layers: int, overlap_ratio: float
                        ) -> Tuple[List[List[int]], List[int]]:
    """Crop boxes (x0, y0, x1, y1): the whole image, then layer i has (2^(i+1))^2 overlapping crops."""
    im_h, im_w = im_size
    short = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw, ch = crop_len(im_w, n, overlap), crop_len(im_h, n, overlap)
        x0s = [int((cw - overlap) * j) for j in range(n)]
        y0s = [int((ch - overlap) * j) for j in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + cw, im_w), min(y0 + ch, im_h)])
            layers.append(i + 1)
    return boxes, layers


def _near_crop_edge(boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
                    ) -> torch.Tensor:
    """Masks touching a crop's edge where that edge is not the image's edge (cut off by the crop)."""
    crop = torch.as_tensor(crop_box, dtype=torch.float)
    orig = torch.as_tensor(orig_box, dtype=torch.float)
    b = boxes.float() + torch.tensor([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], dtype=torch.float)
    near_crop = torch.isclose(b, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(b, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def _xyxy_to_xywh(b: Sequence[float]) -> List[float]:
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


@dataclass
class _Masks:
    """Kept masks of one crop / image: RLEs plus per-mask tensors."""
    rles: List[Dict[str, Any]]
    boxes: torch.Tensor        # N x 4 xyxy (inclusive), image coordinates
    iou_preds: torch.Tensor    # N
    stability: torch.Tensor    # N
    points: torch.Tensor       # N x 2, image coordinates
    crop_boxes: torch.Tensor   # N x 4

    @staticmethod
    def empty() -> "_Masks":
        z = torch.zeros(0)
        return _Masks([], torch.zeros(0, 4), z, z, torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, 4))

    def select(self, keep: torch.Tensor) -> "_Masks":
        idx = keep.tolist() if keep.dtype != torch.bool else torch.nonzero(keep).flatten().tolist()
        k = torch.as_tensor(idx, dtype=torch.long)
        return _Masks([self.rles[i] for i in idx], self.boxes[k], self.iou_preds[k], self.stability[k],
                      self.points[k], self.crop_boxes[k])

    def cat(self, other: "_Masks") -> "_Masks":
        return _Masks(self.rles + other.rles, torch.cat([self.boxes, other.boxes.to(self.boxes.dtype)]),
                      torch.cat([self.iou_preds, other.iou_preds]), torch.cat([self.stability, other.stability]),
                      torch.cat([self.points, other.points.to(self.points.dtype)]),
                      torch.cat([self.crop_boxes, other.crop_boxes.to(self.crop_boxes.dtype)]))


class AutomaticMaskGenerator:
    """Segment everything in an image (see the module docstring). Settings and defaults as in SAM."""

    def __init__(
        self,
        predictor: SamPredictor,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in ("binary_mask", "uncompressed_rle", "coco_rle"):
            raise ValueError(f"unknown output_mode {output_mode!r}")
        self.predictor = predictor
        self.point_grids = (point_grids if point_grids is not None else
                            build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor))
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    @torch.inference_mode()
    def generate(self, image: np.ndarray, region: Optional[Sequence[float]] = None,
                 embedding: Optional[ImageEmbedding] = None) -> List[Dict[str, Any]]:
        """Masks of an H x W x 3 uint8 RGB image as records with the keys of SAM's generator:
        segmentation, area, bbox (XYWH), predicted_iou, point_coords, stability_score, crop_box.

        region: optional (x0, y0, x1, y1): only what lies inside this box.
        embedding: the image's embedding if already computed (whole-image crop only).
        """
        h, w = image.shape[:2]
        if region is not None:
            region = [float(v) for v in region]
            x0, y0 = max(0, int(math.floor(region[0]))), max(0, int(math.floor(region[1])))
            x1, y1 = min(w, int(math.ceil(region[2]))), min(h, int(math.ceil(region[3])))
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"region {region} does not overlap the {w}x{h} image")
            region = [x0, y0, x1, y1]
        crop_boxes, layer_idxs = generate_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        data = _Masks.empty()
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            emb = embedding if (embedding is not None and layer == 0) else None
            data = data.cat(self._process_crop(image, crop_box, layer, (h, w), region, emb))
        if len(crop_boxes) > 1 and len(data.rles):
            areas = (data.crop_boxes[:, 2] - data.crop_boxes[:, 0]) * (data.crop_boxes[:, 3] - data.crop_boxes[:, 1])
            keep = batched_nms(data.boxes.float(), 1 / areas.float(), torch.zeros(len(data.rles)), self.crop_nms_thresh)
            data = data.select(keep)
        if self.min_mask_region_area > 0 and len(data.rles):
            data = self._postprocess_small_regions(data, self.min_mask_region_area,
                                                   max(self.box_nms_thresh, self.crop_nms_thresh))
        return self._records(data)

    def _records(self, data: _Masks) -> List[Dict[str, Any]]:
        out = []
        for i, rle in enumerate(data.rles):
            if self.output_mode == "coco_rle":
                seg: Any = encode_rle(rle)
            elif self.output_mode == "binary_mask":
                seg = rle_to_mask(rle)
            else:
                seg = rle
            out.append({
                "segmentation": seg,
                "area": area_from_rle(rle),
                "bbox": _xyxy_to_xywh(data.boxes[i].tolist()),
                "predicted_iou": float(data.iou_preds[i]),
                "point_coords": [data.points[i].tolist()],
                "stability_score": float(data.stability[i]),
                "crop_box": _xyxy_to_xywh(data.crop_boxes[i].tolist()),
            })
        return out

    def _process_crop(self, image: np.ndarray, crop_box: List[int], layer: int, orig_size: Tuple[int, int],
                      region: Optional[List[int]], embedding: Optional[ImageEmbedding]) -> _Masks:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        ch, cw = crop.shape[:2]
        if embedding is None:
            embedding = self.predictor.encode(np.ascontiguousarray(crop))
        grid = self.point_grids[layer]
        if region is None:
            points = grid * np.array([cw, ch])[None]
        else:
            # The grid over the part of the region inside this crop (crop coordinates).
            rx0, ry0 = max(region[0], x0) - x0, max(region[1], y0) - y0
            rx1, ry1 = min(region[2], x1) - x0, min(region[3], y1) - y0
            if rx1 <= rx0 or ry1 <= ry0:
                return _Masks.empty()
            points = grid * np.array([rx1 - rx0, ry1 - ry0])[None] + np.array([rx0, ry0])[None]
        data = _Masks.empty()
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            data = data.cat(self._process_batch(batch, embedding, (ch, cw), crop_box, orig_size, region))
        if not data.rles:
            return data
        keep = batched_nms(data.boxes.float(), data.iou_preds, torch.zeros(len(data.rles)), self.box_nms_thresh)
        data = data.select(keep)
        offset = torch.tensor([x0, y0, x0, y0])
        data.boxes = data.boxes + offset
        data.points = data.points + torch.tensor([x0, y0])
        data.crop_boxes = torch.tensor([crop_box] * len(data.rles))
        return data

    def _process_batch(self, points: np.ndarray, embedding: ImageEmbedding, crop_size: Tuple[int, int],
                       crop_box: List[int], orig_size: Tuple[int, int], region: Optional[List[int]]) -> _Masks:
        p = self.predictor
        coords = torch.as_tensor(p.transform_coords(points, crop_size), dtype=torch.float32)
        labels = torch.ones(len(points), 1, dtype=torch.int64)
        pred = p.decode_torch(embedding, coords[:, None], labels, multimask_output=True, full_resolution=False)
        low, iou = pred.low_res_logits, pred.iou_predictions
        m = low.shape[1]
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)
        pts = torch.as_tensor(points, dtype=torch.float64).repeat_interleave(m, dim=0)
        # The IoU filter needs no pixels: apply it before upscaling.
        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
            low, iou, pts = low[keep], iou[keep], pts[keep]
        if len(iou) == 0:
            return _Masks.empty()
        # Masks as crops: each upsampled only where it can be foreground (the same pixels and
        # stability scores as full-frame upsampling, at a cost independent of the image size).
        crops, stab = p.mask_crops(low, embedding, crop_size, self.stability_score_offset)
        stab, iou = torch.as_tensor(stab), iou.cpu()
        if self.stability_score_thresh > 0.0:
            keep = stab >= self.stability_score_thresh
            crops, iou, pts, stab = crops[keep.numpy()], iou[keep], pts[keep], stab[keep]
        boxes, masks = crops.boxes, list(crops.masks)
        if region is not None:
            # "Everything inside this box": clip to the region (crop coordinates).
            clip = (max(region[0] - crop_box[0], 0), max(region[1] - crop_box[1], 0),
                    region[2] - crop_box[0], region[3] - crop_box[1])
            boxes, masks = _clip_crops(boxes, masks, clip)
            nonempty = torch.as_tensor(boxes[:, 2] > 0)
            boxes, masks = boxes[nonempty.numpy()], [m for m, k in zip(masks, nonempty.tolist()) if k]
            iou, pts, stab = iou[nonempty], pts[nonempty], stab[nonempty]
        # Tight boxes with inclusive edges (x0, y0, x1, y1), [0, 0, 0, 0] for an empty mask.
        xyxy = torch.as_tensor(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] - 1], axis=1)
                               * (boxes[:, 2:3] > 0))
        orig_h, orig_w = orig_size
        keep = ~_near_crop_edge(xyxy, crop_box, [0, 0, orig_w, orig_h])
        idx = torch.nonzero(keep).flatten().tolist()
        rles = [crop_to_rle(masks[i], crop_box[0] + int(boxes[i, 0]), crop_box[1] + int(boxes[i, 1]), orig_size)
                for i in idx]
        return _Masks(rles, xyxy[keep], iou[keep].cpu(), stab[keep].cpu(), pts[keep], torch.zeros(len(idx), 4))

    @staticmethod
    def _postprocess_small_regions(data: _Masks, min_area: int, nms_thresh: float) -> _Masks:
        """Remove small islands and fill small holes, then NMS again preferring unchanged masks."""
        new_masks, scores = [], []
        for rle in data.rles:
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(mask)
            scores.append(float(not (changed_holes or changed_islands)))
        masks = torch.as_tensor(np.stack(new_masks))
        boxes = masks_to_boxes(masks)
        keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes)), nms_thresh)
        for i in keep.tolist():
            if scores[i] == 0.0:
                data.rles[i] = mask_to_rle(new_masks[i])
                data.boxes[i] = boxes[i]
        return data.select(keep)


def _clip_crops(boxes: np.ndarray, masks: List[np.ndarray], clip: Sequence[int]
                ) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Crops (N x 4 x, y, w, h boxes and their masks) cut to the box clip (x0, y0, x1, y1):
    the new tight boxes (zeros when nothing is left) and masks."""
    out_boxes, out_masks = np.zeros_like(boxes), []
    for i, (box, m) in enumerate(zip(boxes, masks)):
        x, y, w, h = (int(v) for v in box)
        cx0, cy0 = max(clip[0], x), max(clip[1], y)
        cx1, cy1 = min(clip[2], x + w), min(clip[3], y + h)
        if cx1 <= cx0 or cy1 <= cy0:
            out_masks.append(np.zeros((0, 0), bool))
            continue
        out_boxes[i], crop, _ = tight_crop(m[cy0 - y : cy1 - y, cx0 - x : cx1 - x], cx0, cy0)
        out_masks.append(crop)
    return out_boxes, out_masks
