"""Interactive prompt simulation (Segment Anything, section 3 and appendix A).

Training: the first prompt is a foreground point sampled uniformly inside the ground-truth mask
or its bounding box with noise (std 10% of the side, at most 20 px); each further point is
sampled uniformly from the error region of the previous prediction, foreground where the model
missed the object (false negative) and background where it spilled over (false positive).
Evaluation uses the deterministic protocol: each click at the pixel farthest from the boundary
of the larger error region (the first click at the centre of the object).
"""
from typing import Tuple

import numpy as np

from ..engine.mask_utils import farthest_from_boundary


def center_click(mask: np.ndarray) -> np.ndarray:
    """The evaluation's first click: (x, y) farthest from the mask's boundary."""
    point, _ = farthest_from_boundary(mask)
    if point is None:
        raise ValueError("empty mask")
    return np.array(point, dtype=np.float64)


def corrective_click(pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, int]:
    """Evaluation protocol: click at the farthest-from-boundary pixel of the larger error
    (false negatives -> label 1, false positives -> label 0). Returns ((x, y), label);
    with no error at all, a foreground click at the object's centre."""
    fn_point, fn_dist = farthest_from_boundary(gt & ~pred)
    fp_point, fp_dist = farthest_from_boundary(pred & ~gt)
    if fn_point is None and fp_point is None:
        return center_click(gt), 1
    if fp_point is None or (fn_point is not None and fn_dist >= fp_dist):
        return np.array(fn_point, dtype=np.float64), 1
    return np.array(fp_point, dtype=np.float64), 0


def random_point_in(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random (x, y) pixel centre inside a non-empty bool mask."""
    ys, xs = np.nonzero(mask)
    i = rng.integers(len(xs))
    return np.array([xs[i], ys[i]], dtype=np.float64)


def noisy_box(mask: np.ndarray, rng: np.random.Generator, noise: float = 0.1, max_px: float = 20.0) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1) of a mask, each coordinate jittered with Gaussian noise of
    std `noise` x the box side (clipped to max_px), then clipped to the image."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    w, h = x1 - x0, y1 - y0
    jitter = rng.normal(0, noise, 4) * np.array([w, h, w, h])
    jitter = np.clip(jitter, -max_px, max_px)
    box = np.array([x0, y0, x1, y1], dtype=np.float64) + jitter
    hgt, wid = mask.shape
    box[[0, 2]] = np.clip(box[[0, 2]], 0, wid)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, hgt)
    if box[2] < box[0]:
        box[[0, 2]] = box[[2, 0]]
    if box[3] < box[1]:
        box[[1, 3]] = box[[3, 1]]
    return box


def random_error_click(pred: np.ndarray, gt: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, int]:
    """Training protocol: a pixel drawn uniformly from the error region (FN -> 1, FP -> 0).
    With no error, a random foreground point."""
    error = pred ^ gt
    if not error.any():
        return random_point_in(gt, rng), 1
    point = random_point_in(error, rng)
    x, y = int(point[0]), int(point[1])
    return point, int(gt[y, x])
