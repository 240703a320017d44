"""Moving scenes for tracking, with ground truth: scripted motion of a designated target object
(translating, rotating and scaling, fully occluded by a foreground pillar, leaving the image and
coming back, the camera panning), over a background of other moving objects. Deterministic in
(scenario, seed, size, frame); frames can be asked for in any order.

    seq = TrackingSequence("occlusion", seed=1000, height=480, width=640)
    scene = seq.frame(t)                 # a Scene, as scenes.SceneSequence gives
    gt = seq.target_mask(scene)          # H x W bool of the target, or None while it is absent
"""
import math
from typing import List, Optional, Tuple

import numpy as np

from .scenes import (LEVEL_OBJECT, Scene, SceneConfig, _build_objects, _check_args, _make_background,
                     _make_camera, _render, _Scratch, _texture, _distinct_colour)

SCENARIOS = ("translate", "rotate_scale", "occlusion", "exit_return", "pan")
HELD_OUT_SEEDS = tuple(range(7000, 7008))  # the tracking benchmark's fixed set
_STREAM = 0x7AC

FPS = 30.0


class TrackingSequence:
    """One scripted sequence. The target is the object `target_id`; `num_frames` frames long."""

    def __init__(self, scenario: str, seed: int, height: int = 480, width: int = 640, num_frames: int = 150,
                 **options) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
        _check_args(seed, height, width)
        self.scenario, self.seed = scenario, int(seed)
        self.height, self.width, self.num_frames = int(height), int(width), int(num_frames)
        opts = dict(min_objects=3, max_objects=5, object_area_range=(0.03, 0.12), speed_range=(0.3, 1.5),
                    max_turn_deg=0.5, low_contrast_prob=0.0, blur_prob=0.0, motion_blur_prob=0.0, jpeg_prob=0.0)
        opts.update(options)
        self.config = SceneConfig.from_options(**opts)
        rng = np.random.default_rng([self.seed, _STREAM, SCENARIOS.index(scenario)])
        self.pan = int(0.4 * self.width) if scenario == "pan" else 0
        self._background = _make_background(rng, self.height, self.width + self.pan, self.config)
        self._objects = _build_objects(rng, self._background[:, :self.width], self.config, moving=True)
        self._camera = _make_camera(rng, self.height, self.width, self.config)
        self._scratch = _Scratch(self.height, self.width)
        # The target: on top of the other objects (the occlusion scenario's pillar covers it).
        self.target_id = len(self._objects) - 1
        s = min(self.height, self.width)
        self._start = (rng.uniform(0.3, 0.7) * self.width, rng.uniform(0.35, 0.65) * self.height)
        self._speed = rng.uniform(2.0, 4.0) * s / 480.0
        self._heading = rng.uniform(0, 2 * np.pi)
        colour = _distinct_colour(rng, [np.array(self._background.reshape(-1, 3).mean(0))], 60)
        self._pillar_rgb = _texture(rng, self.height, self.height, colour, float(self.height))

    # ---- scripted motion ---------------------------------------------------------------------
    def _target_pose(self, t: int) -> Tuple[float, float, float, float]:
        obj = self._objects[self.target_id]
        x0, y0 = self._start
        a0 = obj.pose[2]
        w, h = self.width, self.height
        if self.scenario == "translate":
            # Faster than the background, bouncing inside 15% margins.
            from .scenes import _bounce
            vx, vy = self._speed * math.cos(self._heading), self._speed * math.sin(self._heading)
            return (_bounce(x0, vx, t, 0.15 * w, 0.85 * w), _bounce(y0, vy, t, 0.15 * h, 0.85 * h), a0, 1.0)
        if self.scenario == "rotate_scale":
            scale = 1.0 + 0.35 * math.sin(2 * math.pi * t / 90.0)
            return (x0 + 0.1 * w * math.sin(2 * math.pi * t / 150.0), y0, a0 + math.radians(3.0) * t, scale)
        if self.scenario == "exit_return":
            # Out through the nearer side edge, 25 frames fully outside, then back the same way.
            side = 1.0 if x0 > w / 2 else -1.0
            radius = self._radius() * 1.05
            edge = (w + radius) if side > 0 else -radius
            v = self._speed * 1.5
            t_out = abs(edge - x0) / v
            t_back = t_out + 25
            if t <= t_out:
                x = x0 + side * v * t
            elif t <= t_back:
                x = edge
            else:
                x = edge - side * v * (t - t_back)
            return (x, y0, a0, 1.0)
        if self.scenario == "occlusion":
            return (x0 + 0.1 * self.width * math.sin(2 * math.pi * t / 150.0), y0, a0, 1.0)
        # pan: the target drifts slowly; the camera moves (see frame)
        return (x0 + 0.3 * self._speed * t * math.cos(self._heading), y0 + 0.3 * self._speed * t * math.sin(self._heading), a0, 1.0)

    def _radius(self) -> float:
        """Radius of the smallest circle about the target's centre that holds it (at scale 1)."""
        obj = self._objects[self.target_id]
        ys, xs = np.nonzero(obj.labels)
        return float(np.hypot(xs + obj.origin[0], ys + obj.origin[1]).max()) + 1.0

    def camera_offset(self, t: int) -> float:
        """Horizontal camera position (pan scenario), pixels into the wide background."""
        if not self.pan:
            return 0.0
        return 0.5 * self.pan * (1 - math.cos(2 * math.pi * t / self.num_frames))

    def pillar(self, t: int) -> Optional[Tuple[int, int]]:
        """Columns [x0, x1) of the foreground pillar (occlusion scenario), or None. It sweeps
        across the target and hides it completely for about 15 frames around frame 60."""
        if self.scenario != "occlusion":
            return None
        v = 5.0 * min(self.height, self.width) / 480.0
        half = self._radius() + 7.5 * v
        x = self._target_pose(t)[0] + v * (t - 60)
        x0, x1 = int(x - half), int(x + half)
        if x1 <= 0 or x0 >= self.width:
            return None
        return max(0, x0), min(self.width, x1)

    def poses(self, t: int) -> List[Tuple[float, float, float, float]]:
        from .scenes import _bounce
        m = 0.12
        out = []
        off = self.camera_offset(t)
        for k, obj in enumerate(self._objects):
            if k == self.target_id:
                x, y, a, s = self._target_pose(t)
            else:
                (cx, cy, a0), (vx, vy, om) = obj.pose, obj.motion
                x = _bounce(cx, vx, t, m * self.width, (1 - m) * self.width)
                y = _bounce(cy, vy, t, m * self.height, (1 - m) * self.height)
                a, s = a0 + om * t, 1.0
            out.append((x - off, y, a, s))
        return out

    # ---- frames -------------------------------------------------------------------------------
    def frame(self, t: int) -> Scene:
        t = int(t)
        if t < 0:
            raise ValueError(f"frame index must be >= 0, got {t}")
        rng = np.random.default_rng([self.seed, _STREAM, t])
        off = int(round(self.camera_offset(t)))
        background = self._background[:, off:off + self.width]
        scene = _render(self.seed, t, background, self._objects, self.poses(t), self._camera, rng,
                        self.config, scratch=self._scratch)
        cols = self.pillar(t)
        if cols is not None:
            x0, x1 = cols
            scene.image[:, x0:x1] = self._pillar_rgb[:, :x1 - x0].clip(0, 255).astype(np.uint8)
            scene.masks[:, :, x0:x1] = False
        return scene

    __getitem__ = frame

    def target_mask(self, scene: Scene, min_area_frac: float = 0.002) -> Optional[np.ndarray]:
        """The target's visible mask on `scene`, or None while (almost) none of it is visible."""
        idx = np.flatnonzero((scene.object_id == self.target_id) & (scene.level == LEVEL_OBJECT))
        if len(idx) == 0:
            return None
        mask = scene.masks[idx[0]]
        if np.count_nonzero(mask) < min_area_frac * mask.size:
            return None
        return mask

    def first_visible(self) -> int:
        for t in range(self.num_frames):
            if self.target_mask(self.frame(t)) is not None:
                return t
        raise ValueError("the target is never visible")
