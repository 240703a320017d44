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
    """Points to track on a target: up to half of them strong corners inside the (slightly
    eroded) mask, the rest spread along its outline just inside it (the object's edge is texture
    even on a flat object; a weak corner on a flat surface is mostly sensor noise).

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
    corners = cv2.goodFeaturesToTrack(gray[y:y + h, x:x + w], max(1, max_points // 2), 0.05, max(2.0, side / 10),
                                      mask=inner, blockSize=5)
    pts = corners.reshape(-1, 2) if corners is not None else np.zeros((0, 2), np.float32)
    need = max_points - len(pts)
    if need > 0:
        # The outline 2 px inside the mask: the tracking window straddles the object's edge.
        edge = cv2.erode(roi, np.ones((5, 5), np.uint8))
        contours, _ = cv2.findContours(edge if edge.any() else roi, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if contours:
            outline = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
            step = max(1, len(outline) // need)
            pts = np.concatenate([pts, outline[::step][:need]])
    return (pts + np.float32([x, y])).astype(np.float32)


def track_points(prev: FlowFrame, cur: FlowFrame, pts: np.ndarray, fb_threshold: float = 1.5,
                 normals: Optional[np.ndarray] = None, edge: Optional[np.ndarray] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Lucas-Kanade from prev to cur with a forward-backward check: returns (new points P x 2,
    ok P bool); a point is ok when tracking it back lands within fb_threshold px of where it began
    (across its edge only, for points flagged in `edge`, with unit `normals` P x 2).
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
    err = (back - p0).reshape(-1, 2)
    if normals is not None:
        # Edge points may slide along their edge (the aperture problem): only the error across
        # the edge counts for them.
        fb = np.where(edge, np.abs((err * normals).sum(1)), np.linalg.norm(err, axis=1))
    else:
        fb = np.linalg.norm(err, axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < fb_threshold)
    return p1.reshape(-1, 2) + off, ok


class AnchoredPoints:
    """Points sampled on a target on its anchor frame (its last decoded frame), followed frame
    to frame, and the similarity transform from the anchor frame to the current one.

    The transform is fitted on all surviving points at once (anchor position -> current
    position), so propagating the anchor's mask does not accumulate the error of re-sampling
    and re-warping on every frame. Where the image has a corner at a point, both coordinates of
    its motion count; where it has only an edge (the outline of a flat object), Lucas-Kanade
    slides along the edge freely and only the motion across the edge counts (the aperture
    problem). The fit is robust (Huber weights), and points that keep disagreeing with it
    (background caught inside the mask) are dropped for good."""

    def __init__(self, points: np.ndarray, gray: Optional[np.ndarray] = None) -> None:
        self.anchor = np.asarray(points, np.float32).reshape(-1, 2)   # P x 2 on the anchor frame
        self.current = self.anchor.copy()                             # P x 2 on the latest frame
        self.normals, self.edge = _point_structure(gray, self.anchor)  # P x 2 unit, P bool
        self.sampled = len(self.anchor)

    def __len__(self) -> int:
        return len(self.anchor)

    @property
    def survival(self) -> float:
        """Share of the sampled points still followed."""
        return len(self.anchor) / self.sampled if self.sampled else 0.0

    def _keep(self, keep: np.ndarray) -> None:
        self.anchor, self.current = self.anchor[keep], self.current[keep]
        self.normals, self.edge = self.normals[keep], self.edge[keep]

    def advance(self, prev: FlowFrame, cur: FlowFrame, guess: Optional[np.ndarray] = None,
                min_points: int = 4, inlier_px: float = 2.0) -> Motion:
        """Follow the points from prev to cur; returns the anchor -> cur transform (None when
        too few points survive). `guess`: the anchor -> prev transform (the fit starts there)."""
        if len(self.anchor) == 0:
            return Motion(None, 0, 0, self.sampled)
        new, ok = track_points(prev, cur, self.current, normals=self.normals, edge=self.edge)
        self.current = new.astype(np.float32)
        self._keep(ok)
        n_ok = len(self.anchor)
        if n_ok < min_points:
            return Motion(None, n_ok, 0, self.sampled)
        m, resid = fit_similarity(self.anchor, self.current, self.normals, self.edge,
                                  np.eye(2, 3) if guess is None else guess)
        inliers = resid < inlier_px
        if inliers.sum() < min_points:
            return Motion(None, n_ok, int(inliers.sum()), self.sampled)
        self._keep(resid < 2 * inlier_px)
        return Motion(m, n_ok, int(inliers.sum()), self.sampled)


def _point_structure(gray: Optional[np.ndarray], pts: np.ndarray,
                     corner_ratio: float = 0.15) -> Tuple[np.ndarray, np.ndarray]:
    """Per point: the image's dominant gradient direction there (unit P x 2) and whether it is an
    edge point (the structure tensor's smaller eigenvalue below `corner_ratio` of the larger)."""
    n = len(pts)
    normals, edge = np.zeros((n, 2), np.float32), np.zeros(n, bool)
    if gray is None or n == 0:
        return normals, edge
    h, w = gray.shape
    x0, y0 = np.maximum(0, np.floor(pts.min(0)).astype(int) - LK_WINDOW[0])
    x1, y1 = np.minimum([w, h], np.ceil(pts.max(0)).astype(int) + LK_WINDOW[0] + 1)
    st = cv2.cornerEigenValsAndVecs(np.ascontiguousarray(gray[y0:y1, x0:x1]), LK_WINDOW[0], 3)
    ix = np.clip(np.round(pts[:, 0]).astype(int) - x0, 0, x1 - x0 - 1)
    iy = np.clip(np.round(pts[:, 1]).astype(int) - y0, 0, y1 - y0 - 1)
    v = st[iy, ix]                                   # P x 6: l1, l2, x1, y1, x2, y2
    edge = v[:, 1] < corner_ratio * np.maximum(v[:, 0], 1e-12)
    normals = v[:, 2:4].astype(np.float32)
    return normals, edge


def fit_similarity(src: np.ndarray, dst: np.ndarray, normals: np.ndarray, edge: np.ndarray,
                   guess: np.ndarray, iterations: int = 6, huber_px: float = 1.5,
                   prior: float = 0.05) -> Tuple[np.ndarray, np.ndarray]:
    """The similarity transform (2 x 3) taking src to dst (P x 2 each), robustly (Huber weights,
    starting from `guess`). Edge points constrain only the motion along their normal (rotated
    with the transform). A weak prior towards `guess` keeps degenerate sets (one straight edge)
    solvable. Returns (matrix, per-point residual in px)."""
    c = src.mean(0).astype(np.float64)
    p = src.astype(np.float64) - c
    q = dst.astype(np.float64) - c
    radius = max(1.0, float(np.sqrt((p ** 2).sum(1).mean())))
    # Parameters in centred coordinates: q = [[a, -b], [b, a]] p + t, theta = (a, b, tx, ty).
    g = np.asarray(guess, np.float64)
    g_t = g[:, :2] @ c + g[:, 2] - c
    theta = np.array([g[0, 0], g[1, 0], g_t[0], g_t[1]])
    theta0 = theta.copy()
    jx = np.stack([p[:, 0], -p[:, 1], np.ones(len(p)), np.zeros(len(p))], 1)   # d(qx)/d(theta)
    jy = np.stack([p[:, 1], p[:, 0], np.zeros(len(p)), np.ones(len(p))], 1)    # d(qy)/d(theta)
    n = normals.astype(np.float64)
    for _ in range(iterations):
        a, b = theta[0], theta[1]
        s = max(1e-9, np.hypot(a, b))
        rot = np.array([[a, -b], [b, a]]) / s
        nr = n @ rot.T                                  # normals moved with the object
        pred = np.stack([jx @ theta, jy @ theta], 1)
        err = q - pred
        r_edge = np.abs((err * nr).sum(1))
        r_full = np.linalg.norm(err, axis=1)
        resid = np.where(edge, r_edge, r_full)
        wgt = np.where(resid <= huber_px, 1.0, huber_px / np.maximum(resid, 1e-9))
        # Weighted least squares through its 4 x 4 normal equations. Rows: edge points one
        # (along the normal), corner points two (x and y), and the prior's four.
        je = nr[:, :1] * jx + nr[:, 1:] * jy
        we, wc = wgt * edge, wgt * ~edge
        H = (je * we[:, None]).T @ je + (jx * wc[:, None]).T @ jx + (jy * wc[:, None]).T @ jy
        g = je.T @ (we * (q * nr).sum(1)) + jx.T @ (wc * q[:, 0]) + jy.T @ (wc * q[:, 1])
        s2 = prior * np.array([radius, radius, 1.0, 1.0]) ** 2
        theta = np.linalg.solve(H + np.diag(s2), g + s2 * theta0)
    a, b, tx, ty = theta
    lin = np.array([[a, -b], [b, a]])
    m = np.concatenate([lin, (np.array([tx, ty]) + c - lin @ c)[:, None]], 1)
    pred = p @ lin.T + np.array([tx, ty])
    err = q - pred
    s = max(1e-9, np.hypot(a, b))
    nr = n @ (lin / s).T
    resid = np.where(edge, np.abs((err * nr).sum(1)), np.linalg.norm(err, axis=1))
    return m, resid


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
