"""SAM 2's memory tracker behind the session's tracker interface (issue 13).

`MemoryTracker` is a `PromptTracker` (same target states, same optical-flow propagation between
encoded frames, same timeouts) whose encoded-frame step is SAM 2's memory instead of box
re-prompting: each target is an object of a `Sam2VideoTracker` with its own bounded memory bank
(conditioning frames + the last frames), started from the target's prompt; on every encoded
frame the session hands the frame to `decode` and every target is tracked from its memory. The
object score decides presence: > 0 and a non-empty mask: tracking (re-acquired when it was
absent); otherwise occluded, then lost and ended after the session's timeouts. An absent
target's memory keeps being updated (with SAM 2's no-object embedding), so when it comes back
the memory finds it, with no appearance search.

Memory frames are the encoded frames: where the model cannot run on every camera frame (a CPU),
the session's optical flow gives the targets a result on the frames in between.

A target's memory is freed on the tracker's next call (any frame with targets, or a new target)
after it ended or was removed; until then at most the session's `max_targets` banks are held.

`tracker_for(predictor)` picks the tracker of the model family: this one for SAM 2, the
model-agnostic `PromptTracker` for every SAM 1 model.
"""
import threading
import weakref
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..embedding_cache import CachedFrame
from ..predictor import ImageEmbedding, MaskPrediction, SamPredictor
from ..prompts import Prompt
from ..sam2_predictor import Sam2Predictor
from ..sam2_video import Sam2VideoTracker, TrackResult
from .flow import FlowFrame
from .target import Target, TargetState
from .tracker import PromptTracker, Tracker, TrackingConfig

MEMORY = "memory"   # the kind of every ask this tracker makes


class MemoryTracker(PromptTracker):
    """The session's tracker for SAM 2 models (see the module docstring).

    Args:
        predictor: the session's Sam2Predictor (it encodes the frames).
        config: the session's tracking settings (timeouts, flow, appearance).
        max_cond_frames / num_maskmem / max_obj_ptrs: the per-target memory bank's caps
            (Sam2VideoTracker).
    """

    def __init__(self, predictor: Sam2Predictor, config: Optional[TrackingConfig] = None, max_cond_frames: int = 8,
                 num_maskmem: Optional[int] = None, max_obj_ptrs: int = 16) -> None:
        super().__init__(config)
        self.video = Sam2VideoTracker(predictor, max_cond_frames=max_cond_frames, num_maskmem=num_maskmem,
                                      max_obj_ptrs=max_obj_ptrs)
        self._lock = threading.Lock()              # start (prompt thread) and decode (model thread)
        # target id -> (memory object id, the target): a memory lives as long as its target
        self._objects: Dict[str, Tuple[int, "weakref.ref[Target]"]] = {}
        self._next_obj = 1
        self._frame_idx: "OrderedDict[int, int]" = OrderedDict()   # frame key -> memory frame index
        self._next_frame = 0

    # ---- start ---------------------------------------------------------------------------
    def separate_starts(self, started, others, rgb, flow, embedding, stamp) -> None:
        """Not here: each object's memory is conditioned on the model's own mask for its prompt,
        and SAM 2 keeps objects apart by their memories."""

    def start(self, target: Target, rgb: np.ndarray, flow: FlowFrame, embedding: Optional[ImageEmbedding],
              pred: MaskPrediction, chosen: int, stamp: float) -> None:
        """A target's first (or re-prompted) decode: its memory object starts from the prompt on
        this frame, and the target from that object's mask."""
        p = target.prompt
        with self._lock:
            self._prune()
            if target.target_id in self._objects:   # re-prompted: its memory restarts
                oid = self._objects[target.target_id][0]
            else:
                oid, self._next_obj = self._next_obj, self._next_obj + 1
            self._objects[target.target_id] = (oid, weakref.ref(target))
            idx = self._index(flow.key)
            if len(p.points) or p.box is not None:
                res = self.video.add_object(oid, embedding, idx, points=p.points if len(p.points) else None,
                                            labels=p.labels if len(p.points) else None, box=p.box)
            else:  # a mask prompt only: the decoded mask is the memory's start
                res = self.video.add_object(oid, embedding, idx, mask=pred.mask(chosen))
        super().start(target, rgb, flow, embedding, res.prediction, 0, stamp)
        if not res.present:
            self._go_absent(target, stamp)

    def _prune(self) -> None:
        """Free the memory of targets that ended, were removed or replaced (lock held)."""
        for tid, (oid, ref) in list(self._objects.items()):
            t = ref()
            if t is None or t.state == TargetState.ENDED:
                del self._objects[tid]
                if oid in self.video.objects:
                    self.video.remove_object(oid)

    def _index(self, key: int) -> int:
        """The memory frame index of a frame (new keys get the next index: frames arrive in order)."""
        idx = self._frame_idx.get(key)
        if idx is None:
            idx = self._frame_idx[key] = self._next_frame
            self._next_frame += 1
            while len(self._frame_idx) > 64:   # bounded: only the cached frames are ever named again
                self._frame_idx.popitem(last=False)
        return idx

    # ---- between encoded frames -------------------------------------------------------------
    def propagate(self, targets: Sequence[Target], prev: FlowFrame, cur: FlowFrame, stamp: float) -> None:
        """Optical flow (PromptTracker); then the memory of targets that ended is freed, unless the
        model thread is tracking right now (never wait for it on the camera's thread)."""
        super().propagate(targets, prev, cur, stamp)
        if self._lock.acquire(blocking=False):
            try:
                self._prune()
            finally:
                self._lock.release()

    # ---- on encoded frames ------------------------------------------------------------------
    def prompts(self, targets: Sequence[Target], size: Tuple[int, int],
                embedding: Optional[ImageEmbedding],
                rgb: Optional[np.ndarray] = None) -> List[Tuple[Target, Prompt, str]]:
        """One ask per target that has not ended: tracked from its memory by `decode`."""
        return [(t, t.prompt, MEMORY) for t in targets if t.state != TargetState.ENDED]

    def decode(self, predictor: SamPredictor, frame: CachedFrame,
               asks: Sequence[Tuple[Target, Prompt, str]]) -> List[MaskPrediction]:
        """Track every asked target on the encoded frame from its memory (the session calls this
        instead of decoding the asks' prompts)."""
        with self._lock:
            self._prune()
            results: Dict[int, TrackResult] = self.video.track(frame.embedding, self._index(frame.key))
            return [results[self._objects[t.target_id][0]].prediction for t, _, _ in asks]

    def correct(self, targets_prompts: Sequence[Tuple[Target, Prompt, str]], preds: Sequence[MaskPrediction],
                rgb: np.ndarray, flow: FlowFrame, embedding: Optional[ImageEmbedding], stamp: float) -> None:
        """Each target's state from its memory result: present (object score > 0, a mask) or absent."""
        for (t, _, _), pred in zip(targets_prompts, preds):
            present = float(pred.object_score_logits[0]) > 0 and pred.crop(0).area > 0
            if not present:
                self._go_absent(t, stamp)
                continue
            was_absent = not t.state.present
            self._anchor(t, pred.mask(0), pred, 0, flow, stamp, self.config.appearance_rate, rgb, embedding)
            if was_absent:
                t.state = TargetState.REACQUIRED
                t.absent_since = None
                t.velocity = np.zeros(2)
                t.reacquisitions += 1

    def memory_size(self, target_id: str) -> Tuple[int, int]:
        """(conditioning frames, recent frames) held in the target's memory bank."""
        with self._lock:
            return self.video.memory_size(self._objects[target_id][0])


def tracker_for(predictor: SamPredictor, config: Optional[TrackingConfig] = None) -> Tracker:
    """The session's tracker for the predictor's model family."""
    if isinstance(predictor, Sam2Predictor):
        return MemoryTracker(predictor, config)
    return PromptTracker(config)
