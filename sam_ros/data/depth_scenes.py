"""Procedural RGB-D scenes with exact geometry: colour, aligned depth and known intrinsics.

Ray casting per pixel through a pinhole camera (optical frame: x right, y down, z forward) onto
a back wall and a few objects (boxes with a yaw, spheres) at known poses. Gives, per object, the
true mask and the true 3D surface, so 3D measurements can be checked in centimetres. Sensor
effects are optional: Gaussian depth noise, holes (0 / NaN), flying pixels at depth edges.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..engine.depth import CameraIntrinsics


@dataclass(frozen=True)
class Box:
    center: Tuple[float, float, float]        # metres, camera optical frame
    size: Tuple[float, float, float]          # full side lengths along the box's own x, y, z
    yaw: float = 0.0                          # rotation about the camera's y axis (radians)
    color: Tuple[int, int, int] = (200, 60, 40)

    def rotation(self) -> np.ndarray:
        """Box axes -> camera frame (columns are the box's x, y, z axes)."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])

    def contains(self, points: np.ndarray, tol: float = 0.0) -> np.ndarray:
        local = (points - np.asarray(self.center)) @ self.rotation()
        return np.all(np.abs(local) <= np.asarray(self.size) / 2 + tol, axis=-1)

    def intersect(self, rays: np.ndarray) -> np.ndarray:
        """Distance t along unnormalised rays (N x 3, from the origin) to the first hit, inf if none."""
        r = self.rotation()
        o = -np.asarray(self.center) @ r            # camera origin in box coordinates
        d = rays @ r
        half = np.asarray(self.size) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = (-half - o) / d
            t1 = (half - o) / d
        near = np.nanmax(np.minimum(t0, t1), axis=1)
        far = np.nanmin(np.maximum(t0, t1), axis=1)
        hit = (near <= far) & (near > 0)
        return np.where(hit, near, np.inf)


@dataclass(frozen=True)
class Sphere:
    center: Tuple[float, float, float]
    radius: float
    color: Tuple[int, int, int] = (40, 160, 220)

    def contains(self, points: np.ndarray, tol: float = 0.0) -> np.ndarray:
        return np.linalg.norm(points - np.asarray(self.center), axis=-1) <= self.radius + tol

    def intersect(self, rays: np.ndarray) -> np.ndarray:
        c = np.asarray(self.center)
        a = np.einsum("ij,ij->i", rays, rays)
        b = -2 * rays @ c
        disc = b * b - 4 * a * (c @ c - self.radius ** 2)
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / (2 * a)
        return np.where((disc >= 0) & (t > 0), t, np.inf)


@dataclass
class DepthScene:
    image: np.ndarray                 # H x W x 3 uint8 RGB
    depth: np.ndarray                 # H x W float32 metres (NaN = hole), or uint16 mm (see encoding)
    encoding: str                     # "32FC1" or "16UC1"
    intrinsics: CameraIntrinsics
    masks: List[np.ndarray]           # per object: H x W bool, the pixels where it is nearest
    objects: list = field(default_factory=list)
    true_depth: Optional[np.ndarray] = None   # noise-free metres, NaN where nothing is hit

    def true_points(self, index: int) -> np.ndarray:
        """N x 3 noise-free surface points of object index (what the camera sees of it)."""
        fx, fy, cx, cy = (self.intrinsics.fx, self.intrinsics.fy, self.intrinsics.cx, self.intrinsics.cy)
        v, u = np.nonzero(self.masks[index])
        z = self.true_depth[v, u]
        return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=1)


def default_intrinsics(width: int = 640, height: int = 480, hfov_deg: float = 69.0) -> CameraIntrinsics:
    """A RealSense-like colour camera: square pixels, principal point slightly off centre."""
    f = width / 2 / np.tan(np.radians(hfov_deg) / 2)
    return CameraIntrinsics(width, height, f, f, width / 2 - 3.5, height / 2 + 2.5)


def render(objects: list, intrinsics: Optional[CameraIntrinsics] = None, wall_z: float = 2.0,
           encoding: str = "32FC1", noise_m: float = 0.0, hole_fraction: float = 0.0,
           flying_pixels: bool = False, seed: int = 0) -> DepthScene:
    """Render objects (Box / Sphere) in front of a wall at wall_z metres.

    noise_m: Gaussian depth noise (std, metres); hole_fraction: pixels set to no-depth (0 / NaN);
    flying_pixels: depth edges get the mean of both sides on their one-pixel border (what
    time-of-flight and stereo sensors produce there).
    """
    intr = intrinsics or default_intrinsics()
    rng = np.random.default_rng(seed)
    h, w = intr.height, intr.width
    v, u = np.mgrid[0:h, 0:w]
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u, float)], axis=-1).reshape(-1, 3)
    t = np.stack([obj.intersect(rays) for obj in objects] + [np.full(len(rays), wall_z)], axis=1)
    nearest = np.argmin(t, axis=1)
    z = t[np.arange(len(rays)), nearest].reshape(h, w)  # rays have z = 1: t is the depth
    nearest = nearest.reshape(h, w)
    masks = [nearest == i for i in range(len(objects))]

    # Colour: flat albedo per object, Lambertian-ish shading by depth, a textured wall.
    image = np.empty((h, w, 3), np.float32)
    image[:] = 90 + 40 * np.sin(u / 17.0)[..., None] * np.cos(v / 23.0)[..., None]
    for obj, m in zip(objects, masks):
        shade = np.clip(1.3 - 0.3 * z[m], 0.5, 1.2)[:, None]
        image[m] = np.asarray(obj.color, np.float32) * shade
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)

    true_depth = z.astype(np.float32)
    depth = true_depth.copy()
    if flying_pixels:
        edge = np.zeros((h, w), bool)
        jump = np.abs(np.diff(z, axis=1)) > 0.05
        edge[:, 1:] |= jump
        mixed = depth.copy()
        mixed[:, 1:][jump] = (z[:, 1:][jump] + z[:, :-1][jump]) / 2
        depth = np.where(edge, mixed, depth)
    if noise_m:
        depth = depth + rng.normal(0, noise_m, depth.shape).astype(np.float32)
    holes = rng.random((h, w)) < hole_fraction
    if encoding == "16UC1":
        out = np.round(depth * 1000).clip(0, 65535).astype(np.uint16)
        out[holes] = 0
    elif encoding == "32FC1":
        out = depth.astype(np.float32)
        out[holes] = np.nan
    else:
        raise ValueError(f"encoding must be 16UC1 or 32FC1, not {encoding!r}")
    return DepthScene(image=image, depth=out, encoding=encoding, intrinsics=intr, masks=masks,
                      objects=list(objects), true_depth=true_depth)


def tabletop(encoding: str = "32FC1", **effects) -> DepthScene:
    """Three objects around 1 m: a yawed box, a sphere, a small box near the edge of the view."""
    objects = [
        Box(center=(-0.12, 0.02, 1.0), size=(0.16, 0.10, 0.08), yaw=np.radians(30)),
        Sphere(center=(0.15, -0.03, 0.95), radius=0.06),
        Box(center=(0.30, 0.18, 1.25), size=(0.06, 0.06, 0.06), color=(60, 200, 80)),
    ]
    return render(objects, encoding=encoding, **effects)
