"""Procedural scenes with nested ground-truth segments, the data the small SAM model is trained on.

A scene is a textured, noisy background with 2-7 overlapping objects of varied shape, colour and
texture. Many objects carry parts (a panel, a cap, a band in another colour or texture) and some
parts carry a subpart (a small disc, rectangle or stripe), so a single click is ambiguous between
the whole object, a part and a subpart, as in the Segment Anything paper. The ground truth lists
the *visible* region of every segment after occlusion:

  level 0  whole object    visible masks pairwise disjoint (later objects in z-order cover earlier)
  level 1  part            visible mask inside its object's visible mask
  level 2  subpart         visible mask inside its part's visible mask

Segments whose visible area is below `min_area_frac` of the image are dropped together with their
descendants, and so is a part or subpart covering more than `max_child_frac` of its parent's
visible area (it would be the same target twice). After composition the image goes through a
simple camera: white balance, illumination gradient and vignetting, optional Gaussian or motion
blur, Gaussian sensor noise and occasional JPEG compression.

Entry points
  generate_scene(seed, height, width, **options)      one static scene
  SceneSequence(seed, height, width, **options)       moving objects over a fixed background;
                                                      .frame(t) for any t >= 0, random access
  segments_for_eval(scene, min_area_frac)             indices of segments to use as targets
  train_seed(i), EVAL_SEEDS, VAL_SEEDS                the seed split (see below)

Options are the fields of `SceneConfig` (e.g. `max_objects=4, blur_prob=0.0`); an unknown name
raises TypeError.

Seeds. Everything is drawn from `np.random.default_rng(seed)` (never global random state), so a
seed and the arguments fix the output completely. Seeds in [HELD_OUT_START, HELD_OUT_STOP)
(1_000_000 to 1_999_999) are reserved for held-out data: EVAL_SEEDS (200 scenes for the reported
numbers) and VAL_SEEDS (64 scenes for validation during training) lie there, and `train_seed(i)`
maps any training index i >= 0 to a seed outside that block. Static scenes and sequences use
separate random streams, so `SceneSequence(s)` does not show the objects of `generate_scene(s)`;
the same seed split applies to both.

Cost per static scene on one core (cv2.setNumThreads(1); measured on a busy shared 2-core VM, so
upper bounds): about 2 ms at 64 x 64, 5 ms at 256 x 256, 10 ms at 384 x 384, 13 ms at 640 x 480
and 30 ms at 1280 x 720. A SceneSequence frame costs 1-12 ms at 640 x 480 (objects are warped
each frame, the rest is cached). Fresh memory pages are a large share of the cost: with glibc
told to keep freed memory (MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456 in
the environment) 640 x 480 drops to about 10 ms. Only numpy and OpenCV are used.
"""
import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

# ---------------------------------------------------------------------------------------------
# Seed split
# ---------------------------------------------------------------------------------------------

HELD_OUT_START = 1_000_000
HELD_OUT_STOP = 2_000_000
EVAL_SEEDS: Tuple[int, ...] = tuple(range(1_000_000, 1_000_200))
VAL_SEEDS: Tuple[int, ...] = tuple(range(1_500_000, 1_500_064))


def train_seed(i: int) -> int:
    """Seed of training sample i (i >= 0); never inside [HELD_OUT_START, HELD_OUT_STOP).

    Indices below HELD_OUT_START map to themselves; larger ones skip over the held-out block.
    """
    i = int(i)
    if i < 0:
        raise ValueError(f"training index must be >= 0, got {i}")
    return i if i < HELD_OUT_START else i + (HELD_OUT_STOP - HELD_OUT_START)


def is_held_out(seed: int) -> bool:
    """True for seeds reserved for evaluation / validation."""
    return HELD_OUT_START <= int(seed) < HELD_OUT_STOP


# ---------------------------------------------------------------------------------------------
# Public types
# ---------------------------------------------------------------------------------------------

LEVEL_OBJECT, LEVEL_PART, LEVEL_SUBPART = 0, 1, 2
SEGMENTS_PER_OBJECT = 16  # segment_id = object_id * SEGMENTS_PER_OBJECT + index inside the object

OBJECT_SHAPES = ("ellipse", "rectangle", "convex", "polygon", "star", "blob")
TEXTURES = ("solid", "gradient", "stripes", "checker", "speckle")


@dataclass(frozen=True)
class SceneConfig:
    """Everything that can be changed through `**options`; defaults are the training distribution.

    Areas are fractions: object areas of min(height, width) ** 2, segment areas of height * width.
    """
    min_objects: int = 2
    max_objects: int = 7
    object_area_range: Tuple[float, float] = (0.04, 0.35)  # drawn log-uniformly
    part_prob: float = 0.6          # chance that an object gets 1..max_parts parts
    max_parts: int = 3
    subpart_prob: float = 0.4       # chance that a part gets a subpart
    min_area_frac: float = 0.002    # visible segments smaller than this are dropped
    max_child_frac: float = 0.95    # drop a part / subpart covering more of its parent than this
    low_contrast_prob: float = 0.1  # chance that an object's colour is close to the background's
    flat_background_prob: float = 0.05
    pattern_background_prob: float = 0.35  # stripes / tiles / checker on the background
    clutter_prob: float = 0.4       # small faint marks on the background (below min_area_frac)
    effects: bool = True            # camera effects (illumination, blur, noise, JPEG)
    noise_sigma_range: Tuple[float, float] = (1.0, 8.0)  # sensor noise, in 0..255 units
    blur_prob: float = 0.2          # Gaussian blur
    motion_blur_prob: float = 0.1
    jpeg_prob: float = 0.1
    speed_range: Tuple[float, float] = (0.5, 3.0)  # moving mode: pixels per frame at 480 px
    max_turn_deg: float = 1.5       # moving mode: largest rotation per frame, degrees

    @classmethod
    def from_options(cls, **options) -> "SceneConfig":
        """The defaults with `options` replaced; TypeError for an unknown name, ValueError for a bad value."""
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown scene option(s): {', '.join(unknown)}")
        cfg = dataclasses.replace(cls(), **options)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        lo, hi = self.object_area_range
        if not 0 < lo <= hi:
            raise ValueError("object_area_range must satisfy 0 < low <= high")
        if not 0 <= self.max_parts < SEGMENTS_PER_OBJECT // 2:
            raise ValueError(f"max_parts must be in [0, {SEGMENTS_PER_OBJECT // 2 - 1}]")
        if self.max_objects * (1 + 2 * self.max_parts) > 255:
            raise ValueError("max_objects * (1 + 2 * max_parts) must not exceed 255")
        if not 0 <= self.min_area_frac < 1 or not 0 < self.max_child_frac <= 1:
            raise ValueError("min_area_frac must be in [0, 1) and max_child_frac in (0, 1]")


@dataclass
class Scene:
    """One rendered scene and its ground truth; K segments, parents listed before their children.

    image:      H x W x 3 uint8 RGB
    masks:      K x H x W bool, visible region of each segment
    level:      K int64, 0 whole object, 1 part, 2 subpart
    parent:     K int64, index into masks of the containing segment, -1 for whole objects
    object_id:  K int64, the whole object a segment belongs to (its z-order index; stable across
                the frames of a SceneSequence, also when the object is hidden in some frames)
    segment_id: K int64, object_id * SEGMENTS_PER_OBJECT + index within the object; stable across
                frames, so parts can be tracked too
    seed, frame: what produced the scene (frame is 0 for a static scene)
    """
    image: np.ndarray
    masks: np.ndarray
    level: np.ndarray
    parent: np.ndarray
    object_id: np.ndarray
    segment_id: np.ndarray
    seed: int
    frame: int = 0

    def __len__(self) -> int:
        return len(self.level)

    @property
    def areas(self) -> np.ndarray:
        """Visible pixel count of every segment (K int64)."""
        return self.masks.reshape(len(self.masks), -1).sum(1, dtype=np.int64)

    def children(self, index: int) -> np.ndarray:
        """Indices of the segments whose parent is `index`."""
        return np.flatnonzero(self.parent == index)


def segments_for_eval(scene: Scene, min_area_frac: float = 0.005,
                      levels: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Indices of segments that make fair evaluation targets: at the given levels, with a visible
    area of at least `min_area_frac` of the image (stricter than generation's default 0.002)."""
    h, w = scene.image.shape[:2]
    ok = (scene.areas >= min_area_frac * h * w) & np.isin(scene.level, np.asarray(levels))
    return np.flatnonzero(ok)


# ---------------------------------------------------------------------------------------------
# Small helpers: colours, noise, polygons
# ---------------------------------------------------------------------------------------------

def _gaussian_table() -> np.ndarray:
    """256 quantiles of the standard normal distribution (unit variance): a uint8 drawn uniformly
    and looked up here is a Gaussian sample, several times cheaper than rng.standard_normal."""
    q = (np.arange(256) + 0.5) / 256.0
    lo, hi = np.full(256, -6.0), np.full(256, 6.0)
    erf = np.vectorize(math.erf)
    for _ in range(50):  # bisection on the normal CDF
        mid = 0.5 * (lo + hi)
        below = 0.5 * (1.0 + erf(mid / math.sqrt(2.0))) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    z = 0.5 * (lo + hi)
    return (z / z.std()).astype(np.float32)


_GAUSS = _gaussian_table()


def _noise(rng: np.random.Generator, h: int, w: int, channels: int = 1,
           sigma: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """h x w x channels float32 Gaussian noise with standard deviation sigma and mean bias."""
    raw = np.frombuffer(rng.bytes(h * w * channels), np.uint8).reshape(h, w, channels)
    table = _GAUSS * np.float32(sigma) + np.float32(bias)
    out = cv2.LUT(raw, table)
    return out.reshape(h, w, channels)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float,
                  channels: int = 1) -> np.ndarray:
    """h x w x channels float32 noise of unit scale, smooth over about h / cells pixels."""
    gh = max(2, int(round(cells * h / max(h, w))) + 2)
    gw = max(2, int(round(cells * w / max(h, w))) + 2)
    grid = rng.standard_normal((gh, gw, channels)).astype(np.float32)
    if 4 * gw < w and 4 * gh < h:  # large cells: bicubic first, else bilinear facets show
        grid = cv2.resize(grid, (4 * gw, 4 * gh), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)


def _hsv_colour(h: float, s: float, v: float) -> np.ndarray:
    """RGB colour (float32, 0..255) from hue, saturation and value in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    rgb = v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (255.0 * rgb).astype(np.float32)


def _random_colour(rng: np.random.Generator, max_sat: float = 1.0) -> np.ndarray:
    return _hsv_colour(rng.random(), max_sat * rng.random() ** 0.7, rng.uniform(0.15, 0.97))


def _shifted_colour(rng: np.random.Generator, colour: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A colour at a distance in [lo, hi] from `colour` (before clipping to 0..255)."""
    d = rng.standard_normal(3)
    d *= rng.uniform(lo, hi) / (np.linalg.norm(d) + 1e-9)
    out = colour + d
    # Reflect instead of clipping, so that the distance survives near the cube's faces.
    out = np.where(out < 0, -out, out)
    out = np.where(out > 255, 510 - out, out)
    return np.clip(out, 0, 255).astype(np.float32)


def _distinct_colour(rng: np.random.Generator, avoid: Sequence[np.ndarray], min_dist: float,
                     tries: int = 12) -> np.ndarray:
    """A random colour at least min_dist (RGB distance) from every colour in `avoid`, if possible."""
    best, best_d = None, -1.0
    for _ in range(tries):
        c = _random_colour(rng)
        d = min((float(np.linalg.norm(c - a)) for a in avoid), default=1e9)
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]) + x[-1] * y[0] - y[-1] * x[0]))


def _unit_shape(rng: np.random.Generator, kind: str) -> np.ndarray:
    """N x 2 polygon of the given kind, centred near 0 with radius about 1."""
    if kind == "ellipse":
        t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), rng.uniform(0.35, 1.0) * np.sin(t)], 1)
    if kind == "rectangle":
        b = rng.uniform(0.3, 1.0)
        return np.array([[-1.0, -b], [1.0, -b], [1.0, b], [-1.0, b]])
    if kind in ("convex", "polygon"):
        n = int(rng.integers(3, 9) if kind == "convex" else rng.integers(5, 11))
        t = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2 * np.pi / n)
        if kind == "convex":  # vertices on an ellipse, in angular order: always convex
            return np.stack([np.cos(t), rng.uniform(0.5, 1.0) * np.sin(t)], 1)
        r = rng.uniform(0.3, 1.0, n)
        r[rng.integers(n)] = rng.uniform(0.25, 0.5)  # at least one deep notch
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if kind == "star":
        n = int(rng.integers(4, 9))
        t = np.arange(2 * n) * (np.pi / n)
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.35, 0.65))
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if kind == "blob":  # smooth random radius function
        t = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
        r = np.ones_like(t)
        for k in range(2, 6):
            r += rng.uniform(0.0, 0.3) / math.sqrt(k - 1) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        r = np.maximum(r, 0.3)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    raise ValueError(f"unknown shape {kind!r}")


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _fill(shape: Tuple[int, int], pts: np.ndarray) -> np.ndarray:
    """Bool mask of the polygon pts (pixel coordinates, x then y) rasterised with sub-pixel precision."""
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts * 16.0).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return m.view(bool)


# ---------------------------------------------------------------------------------------------
# Textures
# ---------------------------------------------------------------------------------------------

def _ramp(h: int, w: int, angle: float) -> np.ndarray:
    """h x w float32 linear ramp from 0 to 1 along direction `angle`."""
    c, s = math.cos(angle), math.sin(angle)
    a = np.arange(w, dtype=np.float32) * c
    b = np.arange(h, dtype=np.float32) * s
    a -= a.min()
    b -= b.min()
    span = float(a.max() + b.max()) or 1.0
    return (b[:, None] + a[None, :]) * np.float32(1.0 / span)


def _waves(h: int, w: int, angle: float, period: float, phase: float) -> np.ndarray:
    """h x w float32 sin(2 pi (x cos a + y sin a) / period + phase), built from 1-D factors."""
    f = 2 * np.pi / period
    ax = np.arange(w, dtype=np.float32) * np.float32(f * math.cos(angle)) + np.float32(phase)
    by = np.arange(h, dtype=np.float32) * np.float32(f * math.sin(angle))
    out = np.multiply.outer(np.sin(by), np.cos(ax))
    out += np.multiply.outer(np.cos(by), np.sin(ax))
    return out


def _tint(t: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """h x w x 3 float32 with channel i = t * scale[i] + bias[i], for an h x w float32 t.

    Built channel by channel and merged: numpy broadcasting over a trailing axis of 3 is many
    times slower than this.
    """
    return cv2.merge([t * np.float32(a) + np.float32(b) for a, b in zip(scale, bias)])


def _mix(c0: np.ndarray, c1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """c0 + t (c1 - c0) as h x w x 3 float32."""
    return _tint(t, c1 - c0, c0)


def _texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray, size: float) -> np.ndarray:
    """h x w x 3 float32 surface of base `colour`; size is the surface's characteristic length."""
    kind = TEXTURES[rng.choice(len(TEXTURES), p=(0.3, 0.25, 0.15, 0.1, 0.2))]
    angle = rng.uniform(0, np.pi)
    if kind == "solid":  # flat colour with mild shading
        return _mix(colour, colour * np.float32(rng.uniform(0.7, 1.0)), _ramp(h, w, angle))
    if kind == "gradient":
        return _mix(colour, _shifted_colour(rng, colour, 40, 110), _ramp(h, w, angle))
    if kind == "stripes":
        period = max(3.0, rng.uniform(0.08, 0.35) * size)
        t = _waves(h, w, angle, period, rng.uniform(0, 2 * np.pi))
        t = (t > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * t
        return _mix(colour, _shifted_colour(rng, colour, 40, 120), t)
    if kind == "checker":
        cell = max(3.0, rng.uniform(0.1, 0.3) * size)
        x = np.arange(w, dtype=np.float32)[None, :]
        y = np.arange(h, dtype=np.float32)[:, None]
        c, s = math.cos(angle) / cell, math.sin(angle) / cell
        t = (np.floor(x * c + y * s) + np.floor(y * c - x * s)) % 2
        return _mix(colour, _shifted_colour(rng, colour, 40, 110), t.astype(np.float32))
    # speckle: fine grain plus blotches
    grain = _noise(rng, h, w, 3 if rng.random() < 0.3 else 1, sigma=rng.uniform(10, 35))
    blotches = _smooth_noise(rng, h, w, rng.uniform(3, 10), 1)[..., 0] * np.float32(rng.uniform(5, 20))
    if grain.shape[2] == 1:
        return _tint(grain[..., 0] + blotches, np.ones(3), colour)
    return cv2.merge([grain[..., i] + blotches + np.float32(colour[i]) for i in range(3)])


# ---------------------------------------------------------------------------------------------
# Background
# ---------------------------------------------------------------------------------------------

def _low_res(h: int, w: int) -> Tuple[int, int]:
    """Size of the grid on which smooth full-image fields are computed before upsampling."""
    return max(2, -(-h // 8)), max(2, -(-w // 8))


def _add_gray(img: np.ndarray, t: np.ndarray, scale: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
    """img[..., i] += scale[i] * t, in place, for an h x w x 3 img and an h x w t."""
    tmp = np.empty_like(t)
    for i in range(3):
        np.multiply(t, np.float32(scale[i]), out=tmp)
        img[..., i] += tmp


def _make_background(rng: np.random.Generator, h: int, w: int, cfg: SceneConfig) -> np.ndarray:
    """h x w x 3 float32 background: gradient, colour blotches, fine clutter texture and, in some
    scenes, stripes / tiles / checker and small faint marks. Rarely flat.

    The smooth layers are computed on a grid 8 times coarser and upsampled: few full-size
    temporaries, since fresh memory pages are a large part of the cost.
    """
    c0 = _random_colour(rng, max_sat=0.7)
    lh, lw = _low_res(h, w)
    if rng.random() < cfg.flat_background_prob:
        return cv2.resize(_tint(np.zeros((lh, lw), np.float32), np.zeros(3), c0), (w, h),
                          interpolation=cv2.INTER_NEAREST)
    s = min(h, w)
    c1 = _shifted_colour(rng, c0, 15, 90)
    if rng.random() < 0.7:
        t = _ramp(lh, lw, rng.uniform(0, 2 * np.pi))
    else:  # radial gradient around a random centre
        cx, cy = rng.uniform(0, lw), rng.uniform(0, lh)
        dx = ((np.arange(lw, dtype=np.float32) - cx) / max(lh, lw)) ** 2
        dy = ((np.arange(lh, dtype=np.float32) - cy) / max(lh, lw)) ** 2
        t = np.sqrt(dy[:, None] + dx[None, :])
        t *= np.float32(1.0 / max(float(t.max()), 1e-6))
    low = _mix(c0, c1, t)
    low += _smooth_noise(rng, lh, lw, rng.uniform(2, 6), 3) * np.float32(rng.uniform(3, 20))
    bg = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.85:  # low-contrast clutter texture
        cells = max(h, w) / rng.uniform(2, 10)
        channels = 3 if rng.random() < 0.3 else 1
        texture = _smooth_noise(rng, h, w, cells, channels)
        np.multiply(texture, np.float32(rng.uniform(2, 9)), out=texture)
        if channels == 3:
            bg += texture
        else:
            _add_gray(bg, texture[..., 0])
    if rng.random() < cfg.pattern_background_prob:
        _add_pattern(rng, bg, s)
    if rng.random() < cfg.clutter_prob:
        _add_clutter(rng, bg, s, cfg)
    return bg


def _add_pattern(rng: np.random.Generator, bg: np.ndarray, s: int) -> None:
    """Stripes, tiles or checker, in place and at low contrast."""
    h, w = bg.shape[:2]
    kind = rng.choice(3)
    amp = rng.uniform(6, 25)
    if kind == 0:  # stripes
        t = _waves(h, w, rng.uniform(0, np.pi), max(4.0, rng.uniform(0.02, 0.15) * s), rng.uniform(0, 6.3))
        if rng.random() < 0.4:
            np.sign(t, out=t)
        _add_gray(bg, t, amp * (1.0 + rng.uniform(-0.3, 0.3, 3)))
        return
    cell = rng.uniform(0.05, 0.2) * s
    ny, nx = max(1, round(h / cell)), max(1, round(w / cell))
    if kind == 1:  # tiles: per-tile colour jitter and grout lines
        jitter = (rng.standard_normal((ny, nx, 3)) * rng.uniform(3, 12)).astype(np.float32)
        bg += cv2.resize(jitter, (w, h), interpolation=cv2.INTER_NEAREST)
        width = max(1, int(round(rng.uniform(0.03, 0.1) * cell)))
        grout = np.float32(amp if rng.random() < 0.5 else -amp)
        for k in range(1, ny):
            y = int(k * h / ny)
            bg[max(0, y - width // 2): y - width // 2 + width] += grout
        for k in range(1, nx):
            x = int(k * w / nx)
            bg[:, max(0, x - width // 2): x - width // 2 + width] += grout
        return
    board = ((np.arange(ny)[:, None] + np.arange(nx)[None, :]) % 2).astype(np.float32) * np.float32(amp)
    _add_gray(bg, cv2.resize(board, (w, h), interpolation=cv2.INTER_NEAREST))


def _add_clutter(rng: np.random.Generator, bg: np.ndarray, s: int, cfg: SceneConfig) -> None:
    """Small faint lines, dots and rings (too small to count as segments), in place."""
    h, w = bg.shape[:2]
    r_max = max(1.5, 0.8 * math.sqrt(cfg.min_area_frac * h * w / np.pi))
    for _ in range(int(rng.integers(10, 40))):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        colour = tuple(float(v) for v in _shifted_colour(rng, bg[y, x], 10, 40))
        kind = rng.random()
        if kind < 0.4:
            L = rng.uniform(0.02, 0.12) * s
            a = rng.uniform(0, 2 * np.pi)
            end = (int(x + L * math.cos(a)), int(y + L * math.sin(a)))
            cv2.line(bg, (x, y), end, colour, 1, cv2.LINE_AA)
        else:
            r = max(1, int(rng.uniform(0.3, 1.0) * r_max))
            cv2.circle(bg, (x, y), r, colour, -1 if kind < 0.8 else 1, cv2.LINE_AA)


# ---------------------------------------------------------------------------------------------
# Objects with parts
# ---------------------------------------------------------------------------------------------

# Opacity scale. cv2.blendLinear divides by (alpha + beta + 1e-5); with weights summing to 1024
# instead of 1 that epsilon vanishes in float32, so uncovered pixels keep their exact value.
_ALPHA_ONE = 1024.0


@dataclass
class _Object:
    """One object drawn once in its own frame (a canvas around its centre) and warped per frame.

    rgb:    h x w x 3 float32 appearance (the texture extends beyond the object)
    alpha:  h x w float32, _ALPHA_ONE inside the object, 0 outside (anti-aliased edge);
            beta = _ALPHA_ONE - alpha
    labels: h x w uint8, 0 outside, j + 1 where segment j is the innermost segment
    origin: object coordinates of canvas pixel (0, 0)
    member: (n + 1) x n bool, member[l, j]: label l lies inside segment j (row 0: outside)
    pose (cx, cy, angle) at frame 0 and motion (vx, vy, omega) per frame
    """
    rgb: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    labels: np.ndarray
    origin: np.ndarray
    level: np.ndarray
    parent: np.ndarray
    member: np.ndarray
    pose: Tuple[float, float, float]
    motion: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def n(self) -> int:
        return len(self.level)


def _quantiles(values: np.ndarray, qs: Sequence[float], limit: int = 2000) -> np.ndarray:
    """Approximate quantiles of a 1-D array (sorted subsample; np.quantile is slow on small input)."""
    sample = np.sort(values[::max(1, len(values) // limit)])
    idx = np.clip(np.round(np.asarray(qs) * (len(sample) - 1)).astype(int), 0, len(sample) - 1)
    return sample[idx]


def _carve(rng: np.random.Generator, region: np.ndarray, kind: str, frac: float) -> np.ndarray:
    """A sub-region of the bool mask `region` covering about `frac` of it.

    kind: 'cap' (the end beyond a line), 'band' (between two parallel lines), or an
    OBJECT_SHAPES name (that shape placed well inside the region, clipped to it).
    """
    count = np.count_nonzero(region)
    if count == 0:
        return np.zeros_like(region)
    if kind in ("cap", "band"):
        a = rng.uniform(0, 2 * np.pi)
        ys, xs = np.nonzero(region)
        proj = xs * np.float32(math.cos(a)) + ys * np.float32(math.sin(a))
        if kind == "cap":
            lo, hi = _quantiles(proj, [1.0 - frac])[0], np.inf
        else:
            mid = rng.uniform(0.25 + frac / 2, 0.75 - frac / 2) if frac < 0.5 else 0.5
            lo, hi = _quantiles(proj, [max(0.0, mid - frac / 2), min(1.0, mid + frac / 2)])
        sel = (proj >= lo) & (proj <= hi)
        out = np.zeros_like(region)
        out[ys[sel], xs[sel]] = True
        return out
    dist = cv2.distanceTransform(region.view(np.uint8), cv2.DIST_L2, 3)
    inner = np.flatnonzero(dist.ravel() >= 0.5 * dist.max())
    cy, cx = divmod(int(inner[rng.integers(len(inner))]), region.shape[1])
    pts = _unit_shape(rng, kind)
    pts *= math.sqrt(frac * count / max(_polygon_area(pts), 1e-9))
    pts = _rotate(pts, rng.uniform(0, 2 * np.pi)) + (cx, cy)
    return _fill(region.shape, pts) & region


_PART_KINDS = ("ellipse", "rectangle", "convex", "blob", "star", "cap", "cap", "band")
_SUBPART_KINDS = ("ellipse", "ellipse", "rectangle", "band", "blob")


def _build_object(rng: np.random.Generator, area: float, s: int, pose: Tuple[float, float, float],
                  reference: np.ndarray, others: List[np.ndarray], cfg: SceneConfig,
                  bake_pose: bool) -> Tuple[_Object, np.ndarray]:
    """An object of about `area` pixels with its parts, coloured against the background colour
    `reference` and the earlier objects' colours `others`. Returns the object and its colour.

    bake_pose (static scenes): draw the rotation and the sub-pixel part of the position into the
    canvas, leaving a pose of (integer x, integer y, 0) that _render places by slicing, not warping.
    """
    pts = _unit_shape(rng, OBJECT_SHAPES[rng.integers(len(OBJECT_SHAPES))])
    pts -= pts.mean(0)
    scale = math.sqrt(area / max(_polygon_area(pts), 1e-9))
    scale = min(scale, 0.6 * s / float(np.linalg.norm(pts, axis=1).max()))  # no object wider than the view
    pts *= scale
    if bake_pose:
        cx, cy, angle = pose
        pts = _rotate(pts, angle) + (cx - round(cx), cy - round(cy))
        pose = (float(round(cx)), float(round(cy)), 0.0)
    origin = np.floor(pts.min(0)) - 2.0
    w, h = (np.ceil(pts.max(0) - origin) + 3).astype(int)
    cover = np.zeros((h, w), np.uint8)  # anti-aliased coverage: soft edges in the image
    cv2.fillPoly(cover, [np.round((pts - origin) * 16.0).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    alpha = cover.astype(np.float32) * np.float32(_ALPHA_ONE / 255.0)
    body = cover >= 128  # the mask is the coverage thresholded at one half
    labels = body.astype(np.uint8)
    size = math.sqrt(max(1, np.count_nonzero(body)))

    if rng.random() < cfg.low_contrast_prob:
        colour = _shifted_colour(rng, reference, 12, 35)
    else:
        colour = _distinct_colour(rng, [reference], 60)
        if others and min(np.linalg.norm(colour - o) for o in others) < 35:
            colour = _distinct_colour(rng, [reference] + others, 50)
    rgb = _texture(rng, h, w, colour, size)
    level, parent = [LEVEL_OBJECT], [-1]

    n_parts = 0
    if cfg.max_parts and rng.random() < cfg.part_prob:
        n_parts = int(rng.integers(1, cfg.max_parts + 1))
    for _ in range(n_parts):
        free = labels == 1  # parts never overlap each other
        for _attempt in range(3):
            kind = _PART_KINDS[rng.integers(len(_PART_KINDS))]
            part = _carve(rng, free, kind, rng.uniform(0.12, 0.4))
            if np.count_nonzero(part) >= max(6, 0.04 * size * size):
                break
        else:
            continue
        part_colour = _distinct_colour(rng, [colour], 55)
        _paint(rng, rgb, part, part_colour)
        level.append(LEVEL_PART)
        parent.append(0)
        part_index = len(level) - 1
        labels[part] = part_index + 1
        if rng.random() < cfg.subpart_prob:
            kind = _SUBPART_KINDS[rng.integers(len(_SUBPART_KINDS))]
            sub = _carve(rng, part, kind, rng.uniform(0.1, 0.35))
            if np.count_nonzero(sub) >= max(4, 0.05 * np.count_nonzero(part)):
                _paint(rng, rgb, sub, _distinct_colour(rng, [part_colour, colour], 55))
                level.append(LEVEL_SUBPART)
                parent.append(part_index)
                labels[sub] = len(level)

    n = len(level)
    parent_arr = np.array(parent, np.int64)
    member = np.zeros((n + 1, n), bool)
    for j in range(n):  # label j + 1 lies in segment j and in all of j's ancestors
        a = j
        while a >= 0:
            member[j + 1, a] = True
            a = parent_arr[a]
    obj = _Object(rgb, alpha, _ALPHA_ONE - alpha, labels, origin, np.array(level, np.int64),
                  parent_arr, member, pose)
    return obj, colour


def _paint(rng: np.random.Generator, rgb: np.ndarray, region: np.ndarray, colour: np.ndarray) -> None:
    """Fill `region` of the canvas rgb with a fresh texture of base `colour`, in place."""
    x0, y0, bw, bh = cv2.boundingRect(region.view(np.uint8))
    y1, x1 = y0 + bh, x0 + bw
    tex = _texture(rng, bh, bw, colour, math.sqrt(np.count_nonzero(region)))
    cv2.copyTo(tex, region[y0:y1, x0:x1].view(np.uint8), dst=rgb[y0:y1, x0:x1])


def _build_objects(rng: np.random.Generator, background: np.ndarray, cfg: SceneConfig,
                   moving: bool) -> List[_Object]:
    """The scene's objects, bottom of the z-order first."""
    h, w = background.shape[:2]
    s = min(h, w)
    small = cv2.resize(background, (16, 16), interpolation=cv2.INTER_AREA)
    mean = np.array(cv2.mean(background)[:3], np.float32)
    lo, hi = np.log(cfg.object_area_range[0]), np.log(cfg.object_area_range[1])
    objects, colours = [], []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        area = s * s * math.exp(rng.uniform(lo, hi))
        m = 0.12 if moving else 0.05
        cx, cy = rng.uniform(m, 1 - m) * w, rng.uniform(m, 1 - m) * h
        # A moving object crosses the whole background: contrast against its mean colour.
        ref = mean if moving else small[min(15, int(cy * 16 / h)), min(15, int(cx * 16 / w))]
        pose = (cx, cy, rng.uniform(0, 2 * np.pi))
        obj, colour = _build_object(rng, area, s, pose, ref, colours, cfg, bake_pose=not moving)
        if moving:
            speed = rng.uniform(*cfg.speed_range) * s / 480.0
            heading = rng.uniform(0, 2 * np.pi)
            omega = math.radians(rng.uniform(-cfg.max_turn_deg, cfg.max_turn_deg))
            obj.motion = (speed * math.cos(heading), speed * math.sin(heading), omega)
        objects.append(obj)
        colours.append(colour)
    return objects


# ---------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------

@dataclass
class _Camera:
    """Image-level effects of one scene (of a whole sequence: only the noise changes per frame)."""
    gain: Optional[np.ndarray]       # h x w x 3 float32: white balance x illumination x vignetting
    blur_sigma: float = 0.0
    motion_kernel: Optional[np.ndarray] = None
    noise_sigma: float = 0.0
    jpeg_quality: int = 0


def _make_camera(rng: np.random.Generator, h: int, w: int, cfg: SceneConfig) -> _Camera:
    """White balance, illumination slope, vignetting, at most one of Gaussian / motion blur,
    sensor noise level and sometimes a JPEG quality."""
    if not cfg.effects:
        return _Camera(None)
    s = min(h, w)
    wb = (1.0 + rng.uniform(-0.08, 0.08, 3)).astype(np.float32)
    lh, lw = _low_res(h, w)  # smooth field: computed coarse, upsampled once
    x = np.linspace(-1, 1, lw, dtype=np.float32) * np.float32(w / max(h, w))
    y = np.linspace(-1, 1, lh, dtype=np.float32) * np.float32(h / max(h, w))
    a = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(0, 0.25) if rng.random() < 0.7 else 0.0
    vignette = rng.uniform(0, 0.4) if rng.random() < 0.6 else 0.0
    ramp = y[:, None] * np.float32(math.sin(a)) + x[None, :] * np.float32(math.cos(a))
    light = 1 + np.float32(slope) * ramp
    light *= 1 - np.float32(vignette) * (y[:, None] ** 2 + x[None, :] ** 2)
    cam = _Camera(cv2.resize(_tint(light, wb, np.zeros(3)), (w, h), interpolation=cv2.INTER_LINEAR))
    u = rng.random()
    if u < cfg.blur_prob:
        sigma = rng.uniform(0.6, 1.8) * s / 480.0
        cam.blur_sigma = sigma if sigma >= 0.4 else 0.0
    elif u < cfg.blur_prob + cfg.motion_blur_prob:
        length = int(round(rng.uniform(3, 9) * s / 480.0))
        if length >= 2:
            k = np.zeros((length | 1, length | 1), np.float32)
            c = (length | 1) // 2
            a = rng.uniform(0, np.pi)
            dx, dy = 0.5 * length * math.cos(a), 0.5 * length * math.sin(a)
            cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
            cam.motion_kernel = k / k.sum()
    cam.noise_sigma = rng.uniform(*cfg.noise_sigma_range)
    if rng.random() < cfg.jpeg_prob:
        cam.jpeg_quality = int(rng.integers(35, 86))
    return cam


def _develop(img: np.ndarray, cam: _Camera, rng: np.random.Generator) -> np.ndarray:
    """Camera effects on the float32 composite (modified in place) -> uint8 RGB image."""
    if cam.gain is not None:
        img *= cam.gain
    if cam.blur_sigma > 0:
        cv2.GaussianBlur(img, (0, 0), cam.blur_sigma, dst=img)
    elif cam.motion_kernel is not None:
        cv2.filter2D(img, -1, cam.motion_kernel, dst=img)
    # Sensor noise (+ 0.5 to round) in bands of rows: small temporaries are recycled by the
    # allocator, a full-size one costs fresh pages every time.
    if cam.noise_sigma > 0:
        table = _GAUSS * np.float32(cam.noise_sigma) + np.float32(0.5)
        h, w = img.shape[:2]
        rows = max(1, 65536 // (3 * w))
        for y in range(0, h, rows):
            band = img[y:y + rows]
            band += cv2.LUT(np.frombuffer(rng.bytes(band.size), np.uint8).reshape(band.shape), table)
    else:
        img += np.float32(0.5)
    out = np.clip(img, 0, 255, out=img).astype(np.uint8)
    if cam.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(out[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, cam.jpeg_quality])
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

class _Scratch:
    """Full-image work buffers that a SceneSequence keeps between frames: warping into views of
    them, instead of into fresh arrays, saves the cost of new memory pages on every frame."""

    def __init__(self, h: int, w: int):
        self.img = np.empty((h, w, 3), np.float32)
        self.rgb = np.empty((h, w, 3), np.float32)
        self.alpha = np.empty((h, w), np.float32)
        self.beta = np.empty((h, w), np.float32)
        self.labels = np.empty((h, w), np.uint8)


def _place(obj: _Object, pose: Tuple[float, ...], h: int, w: int,
           scratch: Optional[_Scratch] = None):
    """The object's canvas at `pose` (cx, cy, angle[, scale]) in an h x w image: ((y0, y1, x0, x1), rgb, alpha, beta,
    labels) over the visible box, or None when it is entirely outside. An unrotated object at an
    integer position is cut out of the canvas (views, no copy); otherwise it is warped (into
    views of `scratch` when given)."""
    cx, cy, angle = pose[:3]
    scale = pose[3] if len(pose) > 3 else 1.0
    oh, ow = obj.labels.shape
    if angle == 0.0 and scale == 1.0 and cx == int(cx) and cy == int(cy):
        X0, Y0 = int(cx + obj.origin[0]), int(cy + obj.origin[1])
        x0, y0, x1, y1 = max(X0, 0), max(Y0, 0), min(X0 + ow, w), min(Y0 + oh, h)
        if x1 <= x0 or y1 <= y0:
            return None
        sl = (slice(y0 - Y0, y1 - Y0), slice(x0 - X0, x1 - X0))
        return (y0, y1, x0, x1), obj.rgb[sl], obj.alpha[sl], obj.beta[sl], obj.labels[sl]
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    rot = np.array([[c, -s], [s, c]])
    corners = (np.array([[-0.5, -0.5], [ow, -0.5], [-0.5, oh], [ow, oh]]) + obj.origin) @ rot.T + (cx, cy)
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    # Canvas pixel p -> image pixel rot (p + origin) + centre, shifted into the box. The canvas
    # has a margin of 2 transparent pixels, so the constant border never shows.
    m = np.hstack([rot, (rot @ obj.origin + (cx - x0, cy - y0))[:, None]])
    size = (x1 - x0, y1 - y0)
    out = [None] * 4
    if scratch is not None:
        out = [b[y0:y1, x0:x1] for b in (scratch.rgb, scratch.alpha, scratch.beta, scratch.labels)]
    rgb = cv2.warpAffine(obj.rgb, m, size, dst=out[0], flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(obj.alpha, m, size, dst=out[1], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
    beta = np.subtract(np.float32(_ALPHA_ONE), alpha, out=out[2])
    labels = cv2.warpAffine(obj.labels, m, size, dst=out[3], flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT)
    return (y0, y1, x0, x1), rgb, alpha, beta, labels


def _render(seed: int, frame: int, background: np.ndarray, objects: List[_Object],
            poses: List[Tuple[float, float, float]], camera: _Camera, rng: np.random.Generator,
            cfg: SceneConfig, own_background: bool = False, scratch: Optional[_Scratch] = None) -> Scene:
    """Composite the objects in z-order over the background, derive the visible masks, develop.

    own_background: the background may be drawn on (no copy); scratch: work buffers to reuse.
    """
    h, w = background.shape[:2]
    if own_background:
        img = background
    elif scratch is not None:
        img = scratch.img
        np.copyto(img, background)
    else:
        img = background.copy()
    # Innermost visible segment of every pixel: 0 background, offsets[k] + j + 1 for segment j
    # of object k (SceneConfig.validate keeps the total below 256).
    seg = np.zeros((h, w), np.uint8)
    boxes, offsets, offset = [], [], 0
    for obj, pose in zip(objects, poses):
        offsets.append(offset)
        offset += obj.n
        placed = _place(obj, pose, h, w, scratch)
        if placed is None:
            boxes.append(None)
            continue
        (y0, y1, x0, x1), rgb, alpha, beta, labels = placed
        crop = img[y0:y1, x0:x1]
        cv2.blendLinear(rgb, crop, alpha, beta, dst=crop)
        to_global = np.arange(256, dtype=np.uint8)
        to_global[1:] += np.uint8(offsets[-1])
        seg_crop = seg[y0:y1, x0:x1]
        cv2.copyTo(cv2.LUT(labels, to_global), labels, dst=seg_crop)
        boxes.append((y0, y1, x0, x1))

    # Visible area of every segment (a segment owns its own label and its descendants'), then
    # which segments to keep: parents before children, so a dropped parent drops its subtree.
    hist = cv2.calcHist([seg], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    min_area = max(cfg.min_area_frac * h * w, 1.0)
    kept = []  # (object index, segment index within the object)
    for k, obj in enumerate(objects):
        if boxes[k] is None:
            continue
        area = hist[offsets[k] + 1: offsets[k] + 1 + obj.n] @ obj.member[1:]
        keep = np.zeros(obj.n, bool)
        for j in range(obj.n):
            p = obj.parent[j]
            if area[j] < min_area:
                continue
            if p >= 0 and (not keep[p] or area[j] > cfg.max_child_frac * area[p]):
                continue
            keep[j] = True
            kept.append((k, j))

    n = len(kept)
    masks = np.zeros((n, h, w), bool)
    level = np.zeros(n, np.int64)
    parent = np.full(n, -1, np.int64)
    object_id = np.zeros(n, np.int64)
    segment_id = np.zeros(n, np.int64)
    where = {}
    table = np.zeros(256, np.uint8)
    for i, (k, j) in enumerate(kept):
        obj = objects[k]
        y0, y1, x0, x1 = boxes[k]
        table[:] = 0
        table[offsets[k] + 1: offsets[k] + 1 + obj.n] = obj.member[1:, j]
        masks[i, y0:y1, x0:x1] = cv2.LUT(seg[y0:y1, x0:x1], table).view(bool)
        level[i] = obj.level[j]
        parent[i] = where[(k, int(obj.parent[j]))] if obj.parent[j] >= 0 else -1
        object_id[i] = k
        segment_id[i] = k * SEGMENTS_PER_OBJECT + j
        where[(k, j)] = i

    image = _develop(img, camera, rng)
    return Scene(image, masks, level, parent, object_id, segment_id, int(seed), int(frame))


def _check_args(seed: int, height: int, width: int) -> None:
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not (16 <= int(height) <= 4096 and 16 <= int(width) <= 4096):
        raise ValueError(f"height and width must be in [16, 4096], got {height} x {width}")


def generate_scene(seed: int, height: int = 480, width: int = 640, **options) -> Scene:
    """One static scene, fully determined by (seed, height, width, options).

    options: fields of SceneConfig, e.g. generate_scene(3, 256, 256, max_objects=4, effects=False).
    """
    _check_args(seed, height, width)
    cfg = SceneConfig.from_options(**options)
    rng = np.random.default_rng(int(seed))
    background = _make_background(rng, int(height), int(width), cfg)
    objects = _build_objects(rng, background, cfg, moving=False)
    camera = _make_camera(rng, int(height), int(width), cfg)
    return _render(seed, 0, background, objects, [o.pose for o in objects], camera, rng, cfg,
                   own_background=True)


_SEQUENCE_STREAM = 0x5E9  # keeps sequences' random streams apart from generate_scene's


def _bounce(p0: float, v: float, t: int, lo: float, hi: float) -> float:
    """Position at time t of a point starting at p0 with velocity v, reflected at lo and hi."""
    span = hi - lo
    if span <= 0:
        return lo
    u = (p0 - lo + v * t) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


class SceneSequence:
    """Moving scene: a fixed background with the same objects (ids, appearance, parts) moving
    smoothly, a few pixels and up to `max_turn_deg` degrees per frame, bouncing off a margin of
    12% of the image so that they stay mostly inside. Objects keep their z-order, so they pass
    over / under each other and can be hidden for a while. Sensor noise is drawn anew for each
    frame; everything else about the camera is fixed.

    frame(t) is deterministic in (seed, t) and independent of which frames were asked for before.
    """

    def __init__(self, seed: int, height: int = 480, width: int = 640, **options):
        _check_args(seed, height, width)
        self.seed, self.height, self.width = int(seed), int(height), int(width)
        self.config = SceneConfig.from_options(**options)
        rng = np.random.default_rng([self.seed, _SEQUENCE_STREAM])
        self._background = _make_background(rng, self.height, self.width, self.config)
        self._background.flags.writeable = False
        self._objects = _build_objects(rng, self._background, self.config, moving=True)
        self._camera = _make_camera(rng, self.height, self.width, self.config)
        self._scratch = _Scratch(self.height, self.width)
        self._lock = threading.Lock()  # the scratch buffers serve one frame at a time

    def __getstate__(self) -> dict:  # picklable (e.g. for DataLoader workers): no lock, no buffers
        state = dict(self.__dict__)
        del state["_lock"], state["_scratch"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scratch = _Scratch(self.height, self.width)
        self._lock = threading.Lock()

    @property
    def num_objects(self) -> int:
        """Objects in the sequence (object ids are 0 .. num_objects - 1)."""
        return len(self._objects)

    def poses(self, t: int) -> List[Tuple[float, float, float]]:
        """(centre x, centre y, angle in radians) of every object at frame t."""
        m = 0.12
        out = []
        for obj in self._objects:
            (cx, cy, a), (vx, vy, om) = obj.pose, obj.motion
            out.append((_bounce(cx, vx, t, m * self.width, (1 - m) * self.width),
                        _bounce(cy, vy, t, m * self.height, (1 - m) * self.height),
                        a + om * t))
        return out

    def frame(self, t: int) -> Scene:
        t = int(t)
        if t < 0:
            raise ValueError(f"frame index must be >= 0, got {t}")
        rng = np.random.default_rng([self.seed, _SEQUENCE_STREAM, t])
        with self._lock:
            return _render(self.seed, t, self._background, self._objects, self.poses(t),
                           self._camera, rng, self.config, scratch=self._scratch)

    __getitem__ = frame
