"""Mask utilities: stability score, boxes, NMS, COCO run-length encoding, small-region cleanup."""
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch


def stability_score(logits: torch.Tensor, mask_threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """IoU of the masks thresholded at mask_threshold + offset and at mask_threshold - offset.

    logits: ... x H x W -> ... . An empty mask scores 0, so that it fails any stability filter
    (SAM's 0 / 0 is NaN, which fails every comparison).
    """
    # Pixel counts as float32 sums are exact below 2**24 pixels per mask and several times faster
    # on CPU than an int64 reduction of a bool tensor.
    count = torch.float32 if logits.shape[-1] * logits.shape[-2] < 2 ** 24 else torch.float64
    inter = (logits > mask_threshold + offset).to(count).sum((-1, -2))
    union = (logits > mask_threshold - offset).to(count).sum((-1, -2))
    return (inter / union.clamp(min=1)).float()


def stability_from_counts(inter: int, union: int, n_pixels: int) -> np.float32:
    """``stability_score`` of one mask from its pixel counts above mask_threshold + offset (inter)
    and mask_threshold - offset (union), n_pixels in the whole mask: the same float arithmetic,
    so the same float32 bit for bit."""
    if n_pixels < 2 ** 24:
        return np.float32(inter) / np.float32(max(union, 1))
    return np.float32(np.float64(inter) / np.float64(max(union, 1)))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes (x0, y0, x1, y1) with inclusive pixel edges of ... x H x W bool masks.

    An empty mask gives [0, 0, 0, 0] (SAM's convention).
    """
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    h, w = masks.shape[-2:]
    rows = masks.any(dim=-1)
    cols = masks.any(dim=-2)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    bottom = (rows * ar_h).amax(-1)
    top = torch.where(rows, ar_h, h).amin(-1)
    right = (cols * ar_w).amax(-1)
    left = torch.where(cols, ar_w, w).amin(-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    empty = ~rows.any(-1)
    return boxes * (~empty).unsqueeze(-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of N x 4 and M x 4 xyxy boxes -> N x M."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=torch.finfo(torch.float32).tiny)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, by decreasing score (ties keep the earlier box)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order].float(), boxes[order].float())
    n = order.numel()
    suppressed = torch.zeros(n, dtype=torch.bool)
    over = (iou > iou_threshold).cpu()
    keep: List[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, categories: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS applied independently per category (boxes of different categories never suppress)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # Shift each category far apart so boxes of different categories cannot overlap.
    span = boxes.float().max() - boxes.float().min() + 1
    shifted = boxes.float() + (categories.to(torch.float32) * span)[:, None]
    return box_nms(shifted, scores, iou_threshold)


# --- run-length encoding (COCO layout: column-major, counts start with a run of zeros) ----

def mask_to_rle(mask: np.ndarray) -> Dict[str, Any]:
    """H x W bool mask -> uncompressed COCO RLE {"size": [H, W], "counts": [...]}."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [h, w], "counts": counts}


def crop_to_rle(crop: np.ndarray, x: int, y: int, size: Tuple[int, int]) -> Dict[str, Any]:
    """The RLE of an H x W (size) mask that is zero except for the h x w bool crop at (x, y):
    the same as ``mask_to_rle`` of the full mask, in O(H x w) instead of O(H x W)."""
    h_img, w_img = size
    h, w = crop.shape
    if not (0 <= x and x + w <= w_img and 0 <= y and y + h <= h_img):
        raise ValueError(f"a {w}x{h} crop at ({x}, {y}) is not inside the {w_img}x{h_img} mask")
    if h == 0 or w == 0:
        return {"size": [h_img, w_img], "counts": [h_img * w_img]}
    columns = np.zeros((w, h_img), bool)  # the crop's columns, full height, column-major
    columns[:, y : y + h] = np.asarray(crop, dtype=bool).T
    counts = mask_to_rle(columns.T)["counts"]
    counts[0] += x * h_img  # the zero columns left of the crop extend the first run of zeros
    tail = (w_img - x - w) * h_img
    if len(counts) % 2:  # ends with a run of zeros
        counts[-1] += tail
    elif tail:
        counts.append(tail)
    return {"size": [h_img, w_img], "counts": counts}


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Uncompressed or compressed COCO RLE -> H x W bool mask."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _decode_counts(counts)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise ValueError(f"RLE counts cover {flat.size} pixels, size says {h}x{w}")
    return flat.reshape(w, h).T


def area_from_rle(rle: Dict[str, Any]) -> int:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _decode_counts(counts)
    return int(sum(counts[1::2]))


def encode_rle(rle: Dict[str, Any]) -> Dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE (the string form pycocotools writes)."""
    return {"size": list(rle["size"]), "counts": _encode_counts(rle["counts"])}


def _encode_counts(counts: List[int]) -> str:
    # COCO's format: each count (after the first two, as a difference to the count two
    # before) in 5-bit groups with a continuation bit, offset by 48 into printable ASCII.
    out = []
    for i, c in enumerate(counts):
        x = int(c) - int(counts[i - 2]) if i > 2 else int(c)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = not ((ch & 0x10) == 0 and x == 0 or (ch & 0x10) != 0 and x == -1)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def _decode_counts(s) -> List[int]:
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: List[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            ch = ord(s[p]) - 48
            x |= (ch & 0x1F) << (5 * k)
            more = bool(ch & 0x20)
            p += 1
            k += 1
            if not more and (ch & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def farthest_from_boundary(mask: np.ndarray) -> Tuple[Optional[Tuple[int, int]], float]:
    """(x, y) of the pixel of a bool mask farthest from the mask's boundary (the image border
    counts as boundary), and that distance; (None, 0) for an empty mask."""
    if not mask.any():
        return None, 0.0
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return (int(x), int(y)), float(dist[y, x])


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Remove islands ("islands") or fill holes ("holes") smaller than area_thresh pixels.

    Returns the mask and whether it changed. Connectivity is 8 (as in SAM).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    holes = mode == "holes"
    working = (holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill]
        if not fill:  # every island is small: keep the largest
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def label_image(size: Tuple[int, int], masks: List[np.ndarray], labels: List[int]) -> np.ndarray:
    """An instance-label image: H x W uint16, 0 = background, masks[i] (H x W bool) painted with
    labels[i]; where masks overlap, the later one wins."""
    out = np.zeros(size, np.uint16)
    for mask, label in zip(masks, labels):
        if mask is not None and label:
            out[mask] = label
    return out

