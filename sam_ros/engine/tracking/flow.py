"""Sparse optical flow for propagating a target between encoded frames (ROS-free, OpenCV).

A target's mask is carried from one camera frame to the next by the motion of points on the
object: pyramidal Lucas-Kanade tracks them, a forward-backward check drops the unreliable ones,
and a similarity transform (translation, rotation, uniform scale) fitted with RANSAC moves the
mask. Everything here works on the target's region, so the cost does not grow with the frame size.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

# Lucas-Kanade settings: a 15 px window over 3 pyramid levels follows motions of ~40 px a frame.
LK_WINDOW = (15, 15)
LK_LEVELS = 3
LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)


@dataclass
class FlowFrame:
    """One camera frame as optical flow sees it: its grey image."""
    key: int
    gray: np.ndarray                       # H x W uint8

    @classmethod
    def from_rgb(cls, key: int, rgb: np.ndarray) -> "FlowFrame":
        return cls(key, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))

    @property
    def size(self) -> Tuple[int, int]:
        return self.gray.shape[:2]


# How far around the points Lucas-Kanade may look: the window plus the largest motion the
# pyramid follows.
SEARCH_MARGIN = LK_WINDOW[0] * (2 ** LK_LEVELS)


@dataclass
class Motion:
    """How a target moved between two frames."""
    matrix: Optional[np.ndarray]   # 2 x 3 similarity transform (None: could not be estimated)
    tracked: int                   # points that passed the forward-backward check
    inliers: int                   # of those, points consistent with the transform
    sampled: int                   # points tried

    @property
    def reliability(self) -> float:
        """Share of the sampled points that moved consistently (0..1)."""
        return self.inliers / self.sampled if self.sampled else 0.0


def sample_points(mask: np.ndarray, bbox: Tuple[int, int, int, int], gray: np.ndarray,
                  max_points: int = 48) -> np.ndarray:
    """Points to track on a target: corners inside the (slightly eroded) mask, topped up with
    points just inside its outline (the object's edge is texture even on a flat object).

    mask: H x W bool/uint8 of the whole frame; bbox: (x, y, w, h) of the mask. Returns P x 2
    float32 (x, y) in image pixels (P may be 0 for an empty mask)."""
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return np.zeros((0, 2), np.float32)
    roi = np.ascontiguousarray(mask[y:y + h, x:x + w], dtype=np.uint8)
    side = max(1.0, np.sqrt(float(np.count_nonzero(roi))))
    r = int(np.clip(side * 0.06, 1, 4))
    inner = cv2.erode(roi, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    if not inner.any():
        inner = roi
    corners = cv2.goodFeaturesToTrack(gray[y:y + h, x:x + w], max_points, 0.01, max(2.0, side / 10),
                                      mask=inner, blockSize=5)
    pts = corners.reshape(-1, 2) if corners is not None else np.zeros((0, 2), np.float32)
    need = max_points - len(pts)
    if need > 0:
        contours, _ = cv2.findContours(inner, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if contours:
            outline = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
            step = max(1, len(outline) // need)
            pts = np.concatenate([pts, outline[::step][:need]])
    return (pts + np.float32([x, y])).astype(np.float32)


def track_points(prev: FlowFrame, cur: FlowFrame, pts: np.ndarray,
                 fb_threshold: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Lucas-Kanade from prev to cur with a forward-backward check: returns (new points P x 2,
    ok P bool); a point is ok when tracking it back lands within fb_threshold px of where it began.
    Works on the region around the points only (its cost does not grow with the frame size)."""
    if len(pts) == 0:
        return pts.copy(), np.zeros(0, bool)
    h, w = prev.size
    x0, y0 = np.floor(pts.min(0)).astype(int) - SEARCH_MARGIN
    x1, y1 = np.ceil(pts.max(0)).astype(int) + SEARCH_MARGIN
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    a = prev.gray[y0:y1, x0:x1]
    b = cur.gray[y0:y1, x0:x1]
    off = np.float32([x0, y0])
    p0 = (pts - off).reshape(-1, 1, 2).astype(np.float32)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS,
                                          criteria=LK_CRITERIA)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, winSize=LK_WINDOW, maxLevel=LK_LEVELS,
                                            criteria=LK_CRITERIA)
    err = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (err < fb_threshold)
    return p1.reshape(-1, 2) + off, ok


def estimate_motion(prev: FlowFrame, cur: FlowFrame, pts: np.ndarray, min_points: int = 4) -> Motion:
    """The similarity transform that moves the points `pts` (on the target in prev) into cur."""
    new, ok = track_points(prev, cur, pts)
    n_ok = int(ok.sum())
    if n_ok < min_points:
        return Motion(None, n_ok, 0, len(pts))
    m, inl = cv2.estimateAffinePartial2D(pts[ok], new[ok], method=cv2.RANSAC, ransacReprojThreshold=2.0,
                                         maxIters=200, confidence=0.99)
    if m is None:
        return Motion(None, n_ok, 0, len(pts))
    return Motion(m, n_ok, int(inl.sum()), len(pts))


def transform_box(matrix: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Axis-aligned box (x0, y0, x1, y1) around the four transformed corners of `box`."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64)
    moved = corners @ matrix.T
    return np.array([*moved.min(0), *moved.max(0)])


def warp_mask(mask: np.ndarray, bbox: Tuple[int, int, int, int], matrix: np.ndarray) -> np.ndarray:
    """The H x W bool mask moved by the 2 x 3 transform, computed on the moved region only."""
    h, w = mask.shape
    x, y, bw, bh = bbox
    out = np.zeros((h, w), bool)
    if bw <= 0 or bh <= 0:
        return out
    moved = transform_box(matrix, np.array([x, y, x + bw, y + bh], np.float64))
    X0, Y0 = max(0, int(np.floor(moved[0])) - 1), max(0, int(np.floor(moved[1])) - 1)
    X1, Y1 = min(w, int(np.ceil(moved[2])) + 2), min(h, int(np.ceil(moved[3])) + 2)
    if X1 <= X0 or Y1 <= Y0:
        return out  # moved out of the image
    # Source crop -> destination crop: shift the transform into both crops' coordinates.
    m = matrix.astype(np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x, y], np.float64) - np.array([X0, Y0], np.float64)
    src = np.ascontiguousarray(mask[y:y + bh, x:x + bw], dtype=np.uint8)
    dst = cv2.warpAffine(src, m, (X1 - X0, Y1 - Y0), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    out[Y0:Y1, X0:X1] = dst.view(bool)
    return out
