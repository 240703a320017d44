"""3D objects from a depth image aligned to the colour camera (ROS-free: numpy and OpenCV).

For grasping: per target mask and frame, the object's 3D points in the depth camera's optical
frame (x right, y down, z forward, metres), their centroid and an oriented bounding box.

- Depth: ``16UC1`` millimetres or ``32FC1`` metres (the two encodings ROS drivers publish),
  aligned (registered) to the colour image, so that pixel (u, v) of a mask is pixel (u, v) of the
  depth image. Holes (0, NaN, inf) are never sampled.
- Intrinsics: a CameraInfo's K (fx, fy, cx, cy) and, when non-zero, its distortion D
  (``plumb_bob`` / ``rational_polynomial``, OpenCV's model): each pixel's viewing ray is then
  undistorted once per camera (a cached H x W ray table), so back-projection costs the same with
  or without distortion. Aligned depth from RealSense / Azure Kinect drivers usually carries the
  colour camera's D; a rectified stream carries zeros.
- Robustness: the mask is eroded before depth is sampled (mask edges straddle depth edges: a
  pixel there may see the background, or a "flying pixel" between both), then depth outliers are
  rejected with the median and the MAD (median absolute deviation) of the samples' z.
- Pairing: :class:`DepthPairer` holds the last few depth frames and gives a colour frame the one
  nearest in stamp within a bounded slop, counting colour frames left without depth.

Bad input raises :class:`DepthError` with a sentence that says what is wrong.
"""
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Optional, Sequence, Tuple

import cv2
import numpy as np

DEPTH_ENCODINGS = ("16UC1", "32FC1")


class DepthError(ValueError):
    """Depth or intrinsics that cannot give a 3D object, with the reason."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """A pinhole camera (CameraInfo's K, image size, optional distortion D)."""
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: Tuple[float, ...] = ()
    distortion_model: str = ""

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int, d: Sequence[float] = (),
               distortion_model: str = "") -> "CameraIntrinsics":
        """From CameraInfo fields: K (9 values, row-major 3 x 3), width, height, D, distortion_model."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise DepthError(f"camera matrix K needs 9 values, got {len(k)}")
        intr = cls(int(width), int(height), k[0], k[4], k[2], k[5], tuple(float(v) for v in d), distortion_model)
        intr.validate()
        return intr

    def validate(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise DepthError(f"camera info has no image size ({self.width} x {self.height}): not calibrated?")
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise DepthError(f"camera matrix K has no valid focal length (fx={self.fx}, fy={self.fy}): "
                             "an all-zero K means the camera is not calibrated")
        if any(v != 0.0 for v in self.distortion) and self.distortion_model not in (
                "plumb_bob", "rational_polynomial", ""):
            raise DepthError(f"distortion model {self.distortion_model!r} is not supported "
                             "(plumb_bob or rational_polynomial; or publish rectified depth)")

    @property
    def distorted(self) -> bool:
        return any(v != 0.0 for v in self.distortion)


@dataclass
class DepthFrame:
    """One depth image in metres (H x W float32, NaN = no depth) with its camera and stamp."""
    depth: np.ndarray
    intrinsics: Optional[CameraIntrinsics]
    stamp: float = 0.0            # seconds (the source header's stamp)
    frame_id: str = ""            # the depth camera's optical frame


@dataclass
class Object3D:
    """One target's 3D geometry in the depth camera's optical frame (metres)."""
    centroid: np.ndarray          # (3,) mean of the inlier points (the visible surface)
    box_center: np.ndarray        # (3,) centre of the oriented box
    box_extents: np.ndarray       # (3,) full side lengths along the box axes, largest first
    box_orientation: np.ndarray   # (4,) quaternion (x, y, z, w): box axes -> camera frame
    points: np.ndarray            # N x 3 float32 inlier points (decimated to max_points)
    n_samples: int                # valid depth pixels sampled inside the eroded mask
    n_inliers: int                # of those, kept by the MAD test
    valid_fraction: float         # n_samples / pixels of the eroded mask (1 - hole fraction)


def depth_to_meters(depth: np.ndarray, encoding: str) -> np.ndarray:
    """H x W depth (uint16 millimetres for 16UC1, float32 metres for 32FC1) -> float32 metres with
    NaN for holes (0, NaN, +-inf, negative)."""
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"depth encoding {encoding!r} is not supported (16UC1 millimetres or 32FC1 metres)")
    if depth.ndim != 2 or depth.size == 0:
        raise DepthError(f"depth image must be H x W with pixels, got shape {depth.shape}")
    if encoding == "16UC1":
        if depth.dtype != np.uint16:
            raise DepthError(f"16UC1 depth must be uint16, got {depth.dtype}")
        out = depth.astype(np.float32) * np.float32(0.001)
        out[depth == 0] = np.nan
        return out
    if depth.dtype != np.float32:
        raise DepthError(f"32FC1 depth must be float32, got {depth.dtype}")
    out = depth.copy()
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


_RAY_CACHE: dict = {}


def pixel_rays(intr: CameraIntrinsics) -> Tuple[np.ndarray, np.ndarray]:
    """Per-pixel normalised ray (x/z, y/z), two H x W float32 tables, cached per camera.

    Without distortion x/z = (u - cx) / fx; with it, the pixel centres are undistorted with
    OpenCV (cv2.undistortPoints, the model CameraInfo's plumb_bob / rational_polynomial D uses).
    """
    key = intr
    rays = _RAY_CACHE.get(key)
    if rays is None:
        u = np.arange(intr.width, dtype=np.float64)
        v = np.arange(intr.height, dtype=np.float64)
        if not intr.distorted:
            rx = np.broadcast_to(((u - intr.cx) / intr.fx)[None, :], (intr.height, intr.width))
            ry = np.broadcast_to(((v - intr.cy) / intr.fy)[:, None], (intr.height, intr.width))
        else:
            uu, vv = np.meshgrid(u, v)
            pix = np.stack([uu.ravel(), vv.ravel()], axis=1)[:, None, :]
            k = np.array([[intr.fx, 0, intr.cx], [0, intr.fy, intr.cy], [0, 0, 1]], np.float64)
            norm = cv2.undistortPoints(pix, k, np.asarray(intr.distortion, np.float64))[:, 0, :]
            rx, ry = norm[:, 0].reshape(uu.shape), norm[:, 1].reshape(uu.shape)
        rays = (np.ascontiguousarray(rx, np.float32), np.ascontiguousarray(ry, np.float32))
        if len(_RAY_CACHE) > 8:  # a handful of cameras at most: bounded memory
            _RAY_CACHE.clear()
        _RAY_CACHE[key] = rays
    return rays


def check_frame(frame: DepthFrame, image_size: Tuple[int, int]) -> None:
    """Raises DepthError unless the depth frame can serve masks of an image of image_size (H, W)."""
    if frame.intrinsics is None:
        raise DepthError("no CameraInfo for the depth image yet: 3D needs the depth camera's intrinsics")
    h, w = frame.depth.shape[:2]
    if (h, w) != tuple(image_size):
        raise DepthError(f"depth image is {w} x {h} but the colour image is {image_size[1]} x {image_size[0]}: "
                         "3D needs depth aligned (registered) to the colour camera")
    intr = frame.intrinsics
    if (intr.width, intr.height) != (w, h):
        raise DepthError(f"CameraInfo is for {intr.width} x {intr.height} images but the depth image is {w} x {h}")


def _quaternion_xyzw(r: np.ndarray) -> np.ndarray:
    """Rotation matrix (3 x 3, det +1) -> unit quaternion (x, y, z, w) with w >= 0."""
    tr = r[0, 0] + r[1, 1] + r[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] > r[2, 2]:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    q = np.asarray(q, np.float64)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def oriented_box(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA box of N x 3 points: (centre (3,), extents (3,) largest first, rotation 3 x 3 whose
    columns are the box axes in the points' frame (right-handed), quaternion (x, y, z, w))."""
    pts = points.astype(np.float64)
    mean = pts.mean(axis=0)
    centred = pts - mean
    cov = centred.T @ centred / max(len(pts) - 1, 1)
    _, vecs = np.linalg.eigh(cov)           # ascending eigenvalues
    axes = vecs[:, ::-1].copy()             # largest spread first
    if np.linalg.det(axes) < 0:
        axes[:, 2] = -axes[:, 2]
    local = centred @ axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre = mean + axes @ ((lo + hi) / 2)
    return centre, hi - lo, axes, _quaternion_xyzw(axes)


def object_from_mask(mask: np.ndarray, frame: DepthFrame, erode_px: int = 2, mad_k: float = 3.0,
                     min_mad_m: float = 0.005, max_points: int = 0, min_points: int = 10,
                     max_samples: int = 6000) -> Object3D:
    """The 3D object under one H x W bool mask of the colour image that frame is aligned to.

    erode_px: the mask is eroded by this many pixels (a (2e+1)-square) before sampling; a mask too
        small to survive it is sampled uneroded. mad_k, min_mad_m: samples whose z is further than
        mad_k * max(1.4826 * MAD, min_mad_m) from the median z are outliers (the floor keeps
        sensor noise on a flat, fronto-parallel surface from counting as outliers).
    max_points: decimate the returned points to at most this many (evenly strided; 0 = all).
    max_samples: a larger (eroded) mask is sampled on a regular pixel grid (every s-th row and
        column) so that about this many pixels are used: the cost per target stays bounded (a
        mask over a quarter of a 640x480 image costs what a small one does) and the statistics
        keep their meaning; n_samples counts the grid's pixels.
    Raises DepthError for a mismatched frame, an empty mask, or fewer than min_points valid samples.
    """
    check_frame(frame, mask.shape[:2])
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise DepthError("the mask is empty: no object to measure")
    # Work on the mask's bounding box only (plus the erosion margin).
    h, w = mask.shape
    y0, y1 = max(int(rows[0]) - erode_px, 0), min(int(rows[-1]) + erode_px + 1, h)
    x0, x1 = max(int(cols[0]) - erode_px, 0), min(int(cols[-1]) + erode_px + 1, w)
    crop = mask[y0:y1, x0:x1].astype(np.uint8)
    if erode_px > 0:
        eroded = cv2.erode(crop, np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8),
                           borderType=cv2.BORDER_CONSTANT, borderValue=0)
        if eroded.any():
            crop = eroded
    n_mask = int(np.count_nonzero(crop))
    step = max(1, int(math.ceil(math.sqrt(n_mask / max_samples)))) if max_samples > 0 else 1
    if step > 1:
        crop = crop[::step, ::step]
        n_mask = int(np.count_nonzero(crop))
    z = frame.depth[y0:y1:step, x0:x1:step]
    sel = (crop != 0) & np.isfinite(z)
    vs, us = np.nonzero(sel)
    zs = z[vs, us]
    if len(zs) < min_points:
        holes = n_mask - len(zs)
        raise DepthError(f"only {len(zs)} valid depth pixels inside the mask ({holes} of {n_mask} are holes; "
                         f"at least {min_points} needed)")
    med = float(np.median(zs))
    mad = float(np.median(np.abs(zs - med)))
    keep = np.abs(zs - med) <= mad_k * max(1.4826 * mad, min_mad_m)
    vs, us, zs = vs[keep] * step + y0, us[keep] * step + x0, zs[keep]
    rx, ry = pixel_rays(frame.intrinsics)
    points = np.empty((len(zs), 3), np.float32)
    points[:, 0] = rx[vs, us] * zs
    points[:, 1] = ry[vs, us] * zs
    points[:, 2] = zs
    centroid = points.mean(axis=0, dtype=np.float64)
    centre, extents, _, quat = oriented_box(points)
    if max_points and len(points) > max_points:
        points = points[np.linspace(0, len(points) - 1, max_points).astype(np.int64)]
    return Object3D(centroid=centroid, box_center=centre, box_extents=extents, box_orientation=quat,
                    points=points, n_samples=int(len(keep)), n_inliers=int(keep.sum()),
                    valid_fraction=float(len(keep)) / max(n_mask, 1))


@dataclass
class DepthPairer:
    """Pairs colour frames with depth frames by stamp.

    ``add`` keeps the last ``capacity`` depth frames; ``match(stamp)`` returns the one nearest to a
    colour frame's stamp if it is within ``slop`` seconds, else None (counted in ``unmatched``).
    Depth usually lags colour by a few ms, so match when the colour frame's results are ready.
    """
    slop: float = 0.02
    capacity: int = 8
    received: int = 0            # depth frames added
    matched: int = 0             # colour frames given a depth frame
    unmatched: int = 0           # colour frames with no depth frame within slop
    _frames: Deque[DepthFrame] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if self.slop < 0 or self.capacity < 1:
            raise ValueError(f"slop must be >= 0 and capacity >= 1 (got {self.slop}, {self.capacity})")

    def add(self, frame: DepthFrame) -> None:
        self._frames.append(frame)
        self.received += 1
        while len(self._frames) > self.capacity:
            self._frames.popleft()

    def match(self, stamp: float) -> Optional[DepthFrame]:
        best = min(self._frames, key=lambda f: abs(f.stamp - stamp), default=None)
        if best is None or abs(best.stamp - stamp) > self.slop:
            self.unmatched += 1
            return None
        self.matched += 1
        return best

    @property
    def last_stamp(self) -> Optional[float]:
        """Stamp of the newest depth frame (None before the first): for 'depth stale' diagnostics."""
        return self._frames[-1].stamp if self._frames else None
