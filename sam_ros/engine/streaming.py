"""Streaming state for live camera input (ROS-free): latest-frame-wins hand-off, a bounded cache of
recent embeddings, and active targets that keep being segmented on every new frame.

The ROS node (sam_ros.ros) wires messages to these; nothing here knows about ROS.
"""
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, List, Optional, Tuple, TypeVar

import cv2
import numpy as np

from .predictor import ImageEmbedding, MaskPrediction
from .prompts import Prompt
from .mask_utils import farthest_from_boundary

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox: put() replaces whatever is waiting (counted as dropped); take() blocks
    until an item is there. The encoder never queues frames behind itself."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self._woken = False
        self.received = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._cond.notify()

    def take(self, timeout: Optional[float] = None) -> Optional[T]:
        """The newest item, or None on timeout / wake() / after close()."""
        with self._cond:
            if self._item is None and not self._closed and not self._woken:
                self._cond.wait(timeout)
            self._woken = False
            item, self._item = self._item, None
            return item

    def wake(self) -> None:
        """Make a waiting (or the next) take() return now, with or without an item: the taker
        has other work (e.g. prompts)."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class LayerPreemption:
    """Serves urgent work (prompts) in the middle of a long forward pass (the image encoder) on
    the thread that runs it.

    On a CPU the node runs all model work on one thread: two threads calling torch at once
    split the cores, and each gets its own OpenMP pool, which (once pools hold more threads than
    there are cores) makes every pool stop spin-waiting, so every small operator pays a thread
    wake-up. Instead, `attach` puts a checkpoint before each parameter-owning layer of the
    encoder; at a checkpoint, if `pending()` says urgent work is queued, `serve()` runs right
    there, and the encoder continues where it was. A job (one frame) spends at most
    `max_pause_s` serving, so a prompt flood delays a frame but cannot starve the encoder.
    Checkpoints reached while `serve` runs do nothing (it may run hooked modules itself).
    """

    def __init__(self, pending: Callable[[], bool], serve: Callable[[], Any], max_pause_s: float = 0.25) -> None:
        self.pending = pending
        self.serve = serve
        self.max_pause_s = max_pause_s
        self._job_paused = 0.0
        self._serving = False
        self.pauses = 0          # checkpoints that served work (diagnostics, tests)
        self.paused_s = 0.0      # total time spent serving inside jobs

    def begin_job(self) -> None:
        """Start of a job (one frame): resets its budget."""
        self._job_paused = 0.0

    @property
    def job_paused_s(self) -> float:
        """Time the current (or last) job has spent serving urgent work."""
        return self._job_paused

    def checkpoint(self) -> None:
        if self._serving or self._job_paused >= self.max_pause_s or not self.pending():
            return
        self._serving = True
        t0 = time.perf_counter()
        try:
            self.serve()
        finally:
            self._serving = False
            spent = time.perf_counter() - t0
            self._job_paused += spent
            self.pauses += 1
            self.paused_s += spent

    def attach(self, module) -> List[Any]:
        """A checkpoint before every layer of a torch module that owns parameters (linear,
        convolution, normalisation layers); returns the hook handles (`handle.remove()`)."""
        def hook(_module, _args):
            self.checkpoint()

        return [m.register_forward_pre_hook(hook) for m in module.modules()
                if next(m.parameters(recurse=False), None) is not None]


@dataclass
class CachedFrame:
    """An encoded frame: its embedding, the frame's metadata (e.g. a ROS header) and image."""
    key: int                      # e.g. the stamp in nanoseconds
    embedding: ImageEmbedding
    meta: Any = None
    image: Optional[np.ndarray] = None
    encoder_ms: float = 0.0
    received_at: float = 0.0


class EmbeddingCache:
    """The last `capacity` encoded frames by key; memory stays bounded whatever the uptime."""

    def __init__(self, capacity: int = 4) -> None:
        if capacity < 1:
            raise ValueError("cache capacity must be at least 1")
        self.capacity = capacity
        self._frames: "OrderedDict[int, CachedFrame]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, frame: CachedFrame) -> None:
        with self._lock:
            self._frames[frame.key] = frame
            self._frames.move_to_end(frame.key)
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)

    def get(self, key: int) -> Optional[CachedFrame]:
        with self._lock:
            return self._frames.get(key)

    def latest(self) -> Optional[CachedFrame]:
        with self._lock:
            return next(reversed(self._frames.values())) if self._frames else None

    def keys(self) -> List[int]:
        with self._lock:
            return list(self._frames)

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()


@dataclass
class Target:
    """An object that keeps being segmented on new frames."""
    target_id: str
    prompt: Prompt                       # as given (coordinates of the frame it was given on)
    image_size: Tuple[int, int]          # (H, W) of that frame
    source: str = "prompt"
    last_low_res: Optional[np.ndarray] = None   # 1 x L x L logits of the last chosen mask
    last_mask: Optional[np.ndarray] = None      # H x W bool, last chosen mask
    frames: int = 0
    lost: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)


class TargetTracker:
    """Active targets, each re-segmented on every new frame, all in one decoder batch.

    How a target follows its object (first version): the prompt for a new frame is derived from
    the target's previous mask: box targets use a box following the previous mask's main region
    (size changes limited per frame), point targets a foreground click at the previous mask's
    centre plus the original background clicks, with the previous low-res logits as the mask
    prompt. When the previous mask is empty the original prompt is re-applied. After a resolution
    change, coordinates are rescaled and the mask prompt is dropped.
    """

    def __init__(self, box_margin: float = 0.1, max_targets: int = 64) -> None:
        self.box_margin = box_margin
        self.max_targets = max_targets
        self._targets: "OrderedDict[str, Target]" = OrderedDict()
        self._lock = threading.Lock()

    def set(self, target: Target) -> None:
        with self._lock:
            self._targets[target.target_id] = target
            self._targets.move_to_end(target.target_id)
            while len(self._targets) > self.max_targets:
                self._targets.popitem(last=False)

    def get(self, target_id: str) -> Optional[Target]:
        with self._lock:
            return self._targets.get(target_id)

    def clear(self, target_id: str = "") -> int:
        """Remove one target (or all with ""). Returns how many were removed."""
        with self._lock:
            if not target_id:
                n = len(self._targets)
                self._targets.clear()
                return n
            return 1 if self._targets.pop(target_id, None) is not None else 0

    def ids(self) -> List[str]:
        with self._lock:
            return list(self._targets)

    def __len__(self) -> int:
        with self._lock:
            return len(self._targets)

    def prompts_for(self, image_size: Tuple[int, int]) -> List[Tuple[Target, Prompt]]:
        """The prompt of every active target for a new frame of the given size."""
        with self._lock:
            targets = list(self._targets.values())
        return [(t, self._next_prompt(t, image_size)) for t in targets]

    def update(self, target: Target, pred: MaskPrediction, chosen: int, image_size: Tuple[int, int]) -> None:
        """Record a target's result on a frame."""
        mask = pred.masks[chosen]
        target.last_mask = mask if mask.any() else None
        target.last_low_res = pred.low_res_logits[chosen][None] if mask.any() else None
        target.lost = 0 if mask.any() else target.lost + 1
        target.image_size = image_size
        target.frames += 1

    def _follow_box(self, t: Target, size: Tuple[int, int]) -> np.ndarray:
        """The box for the next frame: centred on the previous mask's main region (its largest
        connected component, so stray blobs do not pull it), sized like that region plus a margin
        but changing by at most 10% per frame, so one bad mask cannot blow it up."""
        prev = t.extra.get("box", t.prompt.box)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(t.last_mask.astype(np.uint8), connectivity=8)
        main = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) if n > 1 else 0
        x0, y0, w, h = (int(v) for v in stats[main, :4])
        cx, cy = x0 + w / 2, y0 + h / 2
        w, h = w * (1 + 2 * self.box_margin), h * (1 + 2 * self.box_margin)
        pw, ph = prev[2] - prev[0], prev[3] - prev[1]
        w, h = np.clip(w, 0.9 * pw, 1.1 * pw), np.clip(h, 0.9 * ph, 1.1 * ph)
        return np.array([max(0.0, cx - w / 2), max(0.0, cy - h / 2), min(size[1], cx + w / 2), min(size[0], cy + h / 2)])

    def _next_prompt(self, t: Target, size: Tuple[int, int]) -> Prompt:
        p = t.prompt
        sy, sx = size[0] / t.image_size[0], size[1] / t.image_size[1]
        same_size = tuple(size) == tuple(t.image_size)
        if t.last_mask is None or not same_size:
            points = p.points * [sx, sy]
            box = p.box * [sx, sy, sx, sy] if p.box is not None else None
            return Prompt(points, p.labels.copy(), box, None, multimask=p.multimask and t.frames == 0)
        mask_input = t.last_low_res
        if p.box is not None:
            # The box carries the object's extent; feeding the previous logits back as well
            # compounds a bad mask from frame to frame, so box targets re-prompt with the box only.
            box = self._follow_box(t, size)
            t.extra["box"] = box
            return Prompt(np.zeros((0, 2)), np.zeros(0, np.int64), box, None, multimask=False)
        center = np.array(farthest_from_boundary(t.last_mask)[0], dtype=np.float64)
        bg = p.points[p.labels == 0]
        points = np.concatenate([center[None], bg]) if len(bg) else center[None]
        labels = np.concatenate([[1], np.zeros(len(bg), np.int64)])
        return Prompt(points, labels, None, mask_input, multimask=False)
