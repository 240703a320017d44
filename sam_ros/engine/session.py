"""The streaming session: one object that owns the embedding cache, the tracked targets and
their tracker, the prompt queues, and what happens on every camera frame (ROS-free).

Plain Python drives a video with `step` (one call per frame, on the calling thread):

    session = StreamingSession(create_predictor())
    session.step(frame0, stamp=0.0, encode=True)
    session.add_target("cup", Prompt(box=[100, 80, 220, 200], multimask=False))
    for t, frame in enumerate(frames, 1):
        result = session.step(frame, stamp=t / 30)     # every target, every frame
        for obj in result.objects: obj.target_id, obj.state, obj.mask, obj.propagated, obj.age_frames

The ROS node uses the live pipeline instead (`start`, `submit`, `request`, results through a
callback): a tracking thread takes every received frame in order, moves every target to it by
optical flow, and publishes; the model thread encodes the newest frame whenever it is free
(latest frame wins: frames are never queued for the encoder), re-segments the targets on it, and
decodes prompts on cached embeddings, between the encoder's layers on a CPU (prompt latency is
decoder latency). A frame that is being encoded is published once its decode is done, so every
target gets exactly one result per received frame, in order, from the newest decoded state.
"""
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .embedding_cache import CachedFrame, EmbeddingCache
from .mailbox import LatestSlot
from .predictor import MaskPrediction, SamPredictor
from .preemption import LayerPreemption
from .prompt_queue import PromptQueue, PromptRequest, PromptSource
from .prompts import InputError, Prompt, validate_boxes, validate_points
from .tracking.flow import FlowFrame
from .tracking.target import Target, TargetState
from .tracking.memory_tracker import tracker_for
from .tracking.tracker import Tracker, TrackingConfig


@dataclass
class SessionConfig:
    cache_size: int = 4               # encoded frames whose embeddings are kept for prompts
    max_targets: int = 64
    max_pending_prompts: int = 100    # per input queue
    prompt_wait_s: float = 1.0        # a prompt not served within this is dropped (counted)
    prompt_frame_tolerance_s: float = 0.25   # a prompt naming a frame that was not encoded uses
                                             # the newest encoded frame at most this much older
    max_queued_frames: int = 30       # live pipeline: frames waiting for the tracking thread
    encode_every: int = 1             # step(): encode every n-th frame when `encode` is not given
    prompt_priority: bool = True      # CPU: serve prompts between the encoder's layers
    max_pause_s: float = 0.25         # at most this much prompt work inside one frame's encoding
    max_prompt_batch: int = 256       # prompts served per model-thread round
    catch_up_frames: int = 60         # frames kept for targets started on an older frame to catch up
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class SessionFrame:
    """A received camera frame."""
    key: int                       # unique, increasing (e.g. the stamp in ns)
    stamp: float                   # seconds (source time)
    rgb: np.ndarray                # H x W x 3 uint8
    meta: Any = None               # e.g. the ROS header, passed back with results
    received_at: float = 0.0       # monotonic arrival time
    flow: Optional[FlowFrame] = None

    @property
    def size(self) -> Tuple[int, int]:
        return self.rgb.shape[:2]


@dataclass
class ObjectResult:
    """One object on one frame."""
    target_id: str                         # "" for a one-shot prompt
    source: str
    state: str = ""                        # TargetState value for targets, "" for one-shot
    mask: Optional[np.ndarray] = None      # H x W bool, None while absent
    iou: float = 0.0
    stability: float = 0.0
    propagated: bool = False               # moved by optical flow from the last decoded frame
    age_frames: int = 0                    # frames since that decode
    age_s: float = 0.0                     # source time since that decode
    prediction: Optional[MaskPrediction] = None   # all candidates (one-shot prompts)
    chosen: int = 0
    multimask: bool = False


@dataclass
class FrameResult:
    frame: SessionFrame
    objects: List[ObjectResult]
    kind: str = "targets"                  # "targets" or "prompt"
    encoded: bool = False                  # this frame's embedding was computed
    encoder_ms: float = 0.0
    decoder_ms: float = 0.0
    track_ms: float = 0.0                  # optical flow for all targets
    received_at: float = 0.0               # arrival of the frame (targets) or request (prompts)
    meta: Any = None


@dataclass
class SessionStats:
    frames_received: int = 0
    frames_encoded: int = 0
    frames_dropped: int = 0               # frames the tracking thread could not keep up with
    frame_errors: int = 0
    prompt_errors: int = 0
    results: int = 0
    targets_ended: int = 0
    reacquisitions: int = 0
    encoder_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=50))
    decoder_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=50))
    track_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=50))


class StreamingSession:
    def __init__(self, predictor: SamPredictor, config: Optional[SessionConfig] = None,
                 tracker: Optional[Tracker] = None,
                 on_error: Optional[Callable[[str, str], None]] = None) -> None:
        self.predictor = predictor
        self.config = config or SessionConfig()
        # The model family's tracker (SAM 2: its memory tracker; SAM 1: prompt propagation).
        self.tracker = tracker or tracker_for(predictor, self.config.tracking)
        self.cache = EmbeddingCache(self.config.cache_size)
        self.prompts = PromptQueue(self.config.max_pending_prompts)
        self.stats = SessionStats()
        self.on_error = on_error or (lambda kind, message: None)
        self._targets: "OrderedDict[str, Target]" = OrderedDict()
        self._ended: List[Target] = []          # reported on the next frame result
        self._lock = threading.RLock()
        self._last: Optional[SessionFrame] = None   # newest frame the targets are on
        self._seen: Deque[int] = deque(maxlen=256)  # keys of recent frames (encoded or not)
        # Grey images and stamps of the last frames: a target that starts on an older frame (a
        # prompt names the frame it was computed on) catches up through them, frame by frame.
        self._history: Deque[Tuple[FlowFrame, float]] = deque(maxlen=max(2, self.config.catch_up_frames))
        self._since_encode = 0
        self._warned_stamps = False
        self._removed_at: Dict[str, float] = {}
        self._removed_all_at = 0.0
        # live pipeline
        self._on_result: Callable[[FrameResult], None] = lambda r: None
        self._frames: Deque[Tuple[Callable[[], Tuple[np.ndarray, int, float, Any]], float]] = deque()
        self._frames_cond = threading.Condition()
        self._handoff: LatestSlot = LatestSlot()
        self._model_idle = threading.Event()
        self._running = False
        self._threads: List[threading.Thread] = []
        # CPU + eager torch: the model thread serves prompts between the encoder's layers
        # (compiled and exported encoders have no layers to hook).
        encoder = getattr(predictor, "_image_encoder", None) or predictor.model.image_encoder
        single = (self.config.prompt_priority and predictor.device.type == "cpu"
                  and getattr(predictor, "backend_name", "torch") == "torch" and hasattr(encoder, "modules"))
        self.serves_prompts_between_layers = single
        self.preempt = LayerPreemption(lambda: len(self.prompts) > 0, self._serve_prompts_in_layer,
                                       self.config.max_pause_s)
        self._hooks = self.preempt.attach(encoder) if single else []

    # ==== targets ==================================================================================
    def add_target(self, target_id: str, prompt: PromptSource, key: int = 0, source: str = "prompt") -> ObjectResult:
        """Start (or re-prompt) a target on an encoded frame (`key`; 0 = the newest). Raises
        InputError for a bad prompt or when no frame is encoded."""
        if not target_id:
            raise InputError("a target needs a non-empty id")
        frame = self._frame_for(key)
        if frame is None:
            raise InputError("no encoded frame to start the target on" if key == 0 else
                             f"frame {key} is not in the embedding cache")
        return self._decode_items(frame, [(target_id, prompt)], source)[0]

    update_target = add_target

    def remove_target(self, target_id: str = "") -> int:
        """End one target ("" = all); each is reported once as ended. Returns how many."""
        with self._lock:
            ids = [target_id] if target_id else list(self._targets)
            # Prompts still queued for these targets would start them again: drop them (and any
            # being decoded now, by their arrival time).
            self.prompts.discard(lambda tid: tid in ids if target_id else bool(tid))
            if not target_id:
                self._removed_all_at = time.monotonic()
            n = 0
            now = time.monotonic()
            if len(self._removed_at) > 1000:   # bounded: only recent removals matter
                self._removed_at = {k: v for k, v in self._removed_at.items()
                                    if now - v < 2 * self.config.prompt_wait_s}
            for tid in ids:
                self._removed_at[tid] = now
                t = self._targets.pop(tid, None)
                if t is not None:
                    t.state = TargetState.ENDED
                    self._ended.append(t)
                    n += 1
            return n

    def targets(self) -> List[Target]:
        with self._lock:
            return list(self._targets.values())

    # ---- runtime settings (added for the node's runtime parameters, issue 15) --------------------
    # Fixed at construction (they choose the thread layout): prompt_priority.
    RESTART_ONLY = ("prompt_priority",)

    def update_config(self, tracking: Optional[Dict[str, Any]] = None, **changes: Any) -> None:
        """Change SessionConfig fields (by name) and TrackingConfig fields (`tracking={name: value}`)
        while running; they apply from the next frame / prompt on. Bounds held by the parts (the
        embedding cache, the prompt queues, the encoder's prompt pauses) follow; a smaller cache
        or queue sheds its oldest entries on its next insertion. Raises ValueError for an unknown
        or restart-only name (nothing is changed then)."""
        tracking = dict(tracking or {})
        names = {f.name for f in fields(SessionConfig)} - {"tracking"}
        bad = [n for n in changes if n not in names or n in self.RESTART_ONLY]
        bad += [f"tracking.{n}" for n in tracking if n not in {f.name for f in fields(TrackingConfig)}]
        if bad:
            raise ValueError(f"cannot change {', '.join(bad)} on a running session")
        with self._lock:
            for name, value in changes.items():
                setattr(self.config, name, value)
            for cfg in {id(c): c for c in (self.config.tracking, getattr(self.tracker, "config", None))
                        if c is not None}.values():
                for name, value in tracking.items():
                    setattr(cfg, name, value)
            self.cache.capacity = self.config.cache_size
            self.prompts.max_pending = self.config.max_pending_prompts
            self.preempt.max_pause_s = self.config.max_pause_s

    # ==== plain-Python driving ===================================================================
    def step(self, image: np.ndarray, stamp: Optional[float] = None, key: Optional[int] = None,
             meta: Any = None, encode: Optional[bool] = None) -> FrameResult:
        """Process one frame on this thread: propagate every target to it and, when `encode`
        (default: every `encode_every`-th frame), encode it and re-segment the targets."""
        frame = self._make_frame(image, key, stamp, meta)
        t0 = time.perf_counter()
        self._propagate(frame)
        track_ms = (time.perf_counter() - t0) * 1000
        if encode is None:
            encode = self._since_encode + 1 >= self.config.encode_every or self.cache.latest() is None
        enc_ms = dec_ms = 0.0
        if encode:
            enc_ms, dec_ms = self._encode_and_segment(frame)
        else:
            self._since_encode += 1
        return self._targets_result(frame, encode, enc_ms, dec_ms, track_ms)

    def _make_frame(self, image: np.ndarray, key: Optional[int], stamp: Optional[float], meta: Any,
                    received_at: float = 0.0) -> SessionFrame:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 \
                or image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"a frame must be a non-empty H x W x 3 uint8 RGB array, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")
        last = self._last
        received_at = received_at or time.monotonic()
        if stamp is None:
            stamp = (last.stamp + 1 / 30) if last is not None else 0.0
        if key is None:
            key = int(round(stamp * 1e9))
        if last is not None and key <= last.key:
            # Zero or repeated stamps (some drivers): keep frames in order, let time pass as received.
            if not self._warned_stamps:
                self.on_error("frame", "camera stamps do not increase: frames are ordered and timed by arrival")
                self._warned_stamps = True
            key = last.key + 1
            stamp = last.stamp + max(1e-6, received_at - last.received_at)
        self.stats.frames_received += 1
        self._seen.append(key)
        if last is not None and last.size != image.shape[:2]:
            self.on_error("frame", f"camera resolution changed {last.size} -> {image.shape[:2]}")
        return SessionFrame(key, float(stamp), image, meta, received_at,
                            FlowFrame.from_rgb(key, image))

    # ==== per-frame work ==========================================================================
    def _propagate(self, frame: SessionFrame) -> None:
        """Move every target from the frame it is on to `frame`."""
        with self._lock:
            last = self._last
            self._last = frame
            targets = list(self._targets.values())
            if not targets:
                self._history.append((frame.flow, frame.stamp))
                return
            by_prev: Dict[int, List[Target]] = {}
            flows: Dict[int, FlowFrame] = {}
            for t in targets:
                prev = t.flow
                if t.image_size != frame.size:
                    # Resolution changed: the target restarts from its prompt on the next encode.
                    t.image_size = frame.size
                    t.mask, t.track, t.anchor_mask, t.bbox = None, None, None, (0, 0, 0, 0)
                    if t.state.present:
                        t.state = TargetState.OCCLUDED
                        t.absent_since = frame.stamp
                    continue
                if prev is None:
                    prev = last.flow if last is not None else None
                if prev is None or prev.key == frame.key:
                    continue
                by_prev.setdefault(id(prev), []).append(t)
                flows[id(prev)] = prev
            for pid, group in by_prev.items():
                prev = flows[pid]
                # Frames received since the group's frame, in order (a gap of many frames is too
                # much motion for one optical-flow step).
                for f, f_stamp in [h for h in self._history if prev.key < h[0].key < frame.key]:
                    self.tracker.propagate(group, prev, f, f_stamp)
                    prev = f
                self.tracker.propagate(group, prev, frame.flow, frame.stamp)
            self._history.append((frame.flow, frame.stamp))
            for t in targets:
                t.flow = frame.flow
            self._collect_ended()

    def _collect_ended(self) -> None:
        for tid, t in list(self._targets.items()):
            if t.state == TargetState.ENDED:
                del self._targets[tid]
                self._ended.append(t)
                self.stats.targets_ended += 1

    def _encode(self, frame: SessionFrame) -> Tuple[CachedFrame, float]:
        t0 = time.perf_counter()
        self.preempt.begin_job()
        emb = self.predictor.encode(frame.rgb)
        enc_ms = (time.perf_counter() - t0 - self.preempt.job_paused_s) * 1000
        cached = CachedFrame(frame.key, emb, frame.meta, frame.rgb, enc_ms, frame.received_at, frame.stamp, frame.flow)
        self.cache.add(cached)
        self.stats.frames_encoded += 1
        self.stats.encoder_ms.append(enc_ms)
        self._since_encode = 0
        return cached, enc_ms

    def _encode_and_segment(self, frame: SessionFrame) -> Tuple[float, float]:
        cached, enc_ms = self._encode(frame)
        return enc_ms, self._segment_targets(frame, cached)

    def _segment_targets(self, frame: SessionFrame, cached: CachedFrame) -> float:
        """Re-segment every target on an encoded frame (one decoder batch) and correct them."""
        with self._lock:
            targets = [t for t in self._targets.values() if t.key == frame.key or t.image_size == frame.size]
            if not targets:
                return 0.0
            for t in targets:
                if t.mask is None and t.state.present:
                    t.state = TargetState.OCCLUDED
            asks = self.tracker.prompts(targets, frame.size, cached.embedding, frame.rgb)
            restart = [t for t in targets if not t.appearance.area]
        # Targets that never had a mask (or lost it to a resolution change) restart from their prompt.
        asks += [(t, self._scaled_prompt(t, frame.size), "track") for t in restart if t.mask is None and
                 not any(a[0] is t for a in asks)]
        if not asks:
            return 0.0
        t0 = time.perf_counter()
        try:
            # A tracker with its own `decode` (SAM 2's memory tracker) segments the targets itself.
            decode = getattr(self.tracker, "decode", None)
            preds = (decode(self.predictor, cached, asks) if decode is not None else
                     self.predictor.predict_prompts(cached.embedding, [p for _, p, _ in asks]))
        except InputError as e:
            self.on_error("targets", f"targets could not be decoded on this frame: {e}")
            return 0.0
        dec_ms = (time.perf_counter() - t0) * 1000
        self.stats.decoder_ms.append(dec_ms)
        with self._lock:
            before = {id(t): t.reacquisitions for t in targets}
            self.tracker.correct(asks, preds, frame.rgb, frame.flow, cached.embedding, frame.stamp)
            self.stats.reacquisitions += sum(t.reacquisitions - before[id(t)] for t in targets)
            for t in targets:
                t.flow = frame.flow
        return dec_ms

    @staticmethod
    def _scaled_prompt(t: Target, size: Tuple[int, int]) -> Prompt:
        p = t.prompt
        h0, w0 = t.prompt_size or size
        sx, sy = size[1] / w0, size[0] / h0
        box = p.box * [sx, sy, sx, sy] if p.box is not None else None
        return Prompt(p.points * [sx, sy], p.labels.copy(), box, None, multimask=False)

    def _targets_result(self, frame: SessionFrame, encoded: bool, enc_ms: float, dec_ms: float,
                        track_ms: float) -> FrameResult:
        objects = []
        with self._lock:
            for t in self._targets.values():
                objects.append(self._target_object(t, frame))
            for t in self._ended:
                objects.append(ObjectResult(t.target_id, t.source, TargetState.ENDED.value))
            self._ended.clear()
        self.stats.results += 1
        self.stats.track_ms.append(track_ms)
        return FrameResult(frame, objects, "targets", encoded, enc_ms, dec_ms, track_ms, frame.received_at, frame.meta)

    @staticmethod
    def _target_object(t: Target, frame: SessionFrame) -> ObjectResult:
        present = t.state.present and t.mask is not None
        return ObjectResult(t.target_id, t.source, t.state.value, t.mask if present else None,
                            t.iou, t.stability, t.propagated and present, t.age_frames,
                            max(0.0, frame.stamp - t.decoded_stamp))

    # ==== prompts ===================================================================================
    def request(self, req: PromptRequest, queue: str = "") -> None:
        """Queue prompts for the model thread (live pipeline); the result comes through the callback."""
        if not req.deadline:
            req.deadline = req.received_at + self.config.prompt_wait_s
        dropped = self.prompts.put(req, queue or req.source)
        if dropped:
            self.on_error("prompts", f"{queue or req.source} queue full ({self.config.max_pending_prompts} "
                                     f"requests): dropped the oldest")
        self._handoff.wake()

    def _frame_for(self, key: int) -> Optional[CachedFrame]:
        if key == 0:
            return self.cache.latest()
        frame = self.cache.get(key)
        if frame is not None:
            return frame
        # A frame that was received but not encoded: the newest encoded one before it, if close.
        if key in self._seen:
            older = [k for k in self.cache.keys() if k <= key]
            if older and key - max(older) <= self.config.prompt_frame_tolerance_s * 1e9:
                return self.cache.get(max(older))
        return None

    def serve_prompts(self, budget_items: Optional[int] = None) -> bool:
        """Decode queued prompt requests whose frame is cached (model thread). Returns whether
        requests are still waiting for their frame."""
        reqs, expired = self.prompts.take(budget_items or self.config.max_prompt_batch)
        for req in expired:
            self.on_error("prompts", f"{len(req.items)} prompt(s) from {req.source} waited more than "
                                     f"{self.config.prompt_wait_s} s: dropped")
        if not reqs:
            return False
        groups: "OrderedDict[int, List[PromptRequest]]" = OrderedDict()
        for req in reqs:
            groups.setdefault(req.key, []).append(req)
        waiting = []
        for key, group in groups.items():
            frame = self._frame_for(key)
            if frame is None:
                waiting.extend(self._not_ready(key, group))
                continue
            items, owners = [], []
            for req in group:
                for tid, item in req.items:
                    items.append((tid, item))
                    owners.append(req)
            try:
                objs = self._decode_items(frame, items, None, owners)
            except Exception as e:  # keep serving the others
                self.stats.prompt_errors += len(items)
                self.on_error("prompts", f"decoding failed: {type(e).__name__}: {e}")
                continue
            by_req: "OrderedDict[int, Tuple[PromptRequest, List[ObjectResult]]]" = OrderedDict()
            for req, obj in zip(owners, objs):
                if obj is not None:
                    by_req.setdefault(id(req), (req, []))[1].append(obj)
            for req, objects in by_req.values():
                sf = SessionFrame(frame.key, getattr(frame, "stamp", 0.0), frame.image, frame.meta, frame.received_at)
                self._on_result(FrameResult(sf, objects, "prompt", False, 0.0, self._last_dec_ms, 0.0,
                                            req.received_at, req.meta if req.meta is not None else frame.meta))
        if waiting:
            self.prompts.put_back(waiting)
        return bool(waiting)

    def _not_ready(self, key: int, reqs: List[PromptRequest]) -> List[PromptRequest]:
        latest = self.cache.latest()
        keep, now = [], time.monotonic()
        for req in reqs:
            newer = latest is None or key > latest.key
            if now < req.deadline and (key == 0 or newer):
                keep.append(req)
                continue
            self.stats.prompt_errors += len(req.items)
            if key == 0:
                self.on_error("prompts", "no camera frame has been encoded yet: prompt dropped")
            elif newer:
                self.on_error("prompts", f"frame {key * 1e-9:.3f}s was not encoded within "
                                         f"{self.config.prompt_wait_s}s (latest frame wins): prompt dropped")
            else:
                self.on_error("prompts", f"frame {key * 1e-9:.3f}s is no longer cached (the cache holds "
                                         f"the last {self.cache.capacity} encoded frames): prompt dropped")
        return keep

    _last_dec_ms = 0.0

    def _decode_items(self, frame: CachedFrame, items: Sequence[Tuple[str, PromptSource]], source: Optional[str],
                      owners: Optional[Sequence[PromptRequest]] = None) -> List[Optional[ObjectResult]]:
        """Decode prompts on a cached frame; items with a target id start (or re-prompt) it."""
        size = frame.embedding.original_size
        prompts, keep = [], []
        out: List[Optional[ObjectResult]] = [None] * len(items)
        for i, (tid, item) in enumerate(items):
            try:
                prompt = item if isinstance(item, Prompt) else item(size, self.predictor.low_res_size)
                check_prompt(prompt, size)
            except InputError as e:
                self.stats.prompt_errors += 1
                if owners is None:
                    raise
                self.on_error("prompts", f"prompt {tid or '(one-shot)'} rejected: {e}")
                continue
            prompts.append(prompt)
            keep.append(i)
        if not prompts:
            return out
        t0 = time.perf_counter()
        preds = self.predictor.predict_prompts(frame.embedding, prompts)
        self._last_dec_ms = (time.perf_counter() - t0) * 1000
        self.stats.decoder_ms.append(self._last_dec_ms)
        flow = getattr(frame, "flow", None) or FlowFrame.from_rgb(frame.key, frame.image)
        stamp = getattr(frame, "stamp", 0.0)
        started: List[Target] = []
        for i, prompt, pred in zip(keep, prompts, preds):
            tid, _ = items[i]
            src = source or (owners[i].source if owners else "prompt")
            chosen = int(np.argmax(pred.iou_predictions))
            state = ""
            sent = owners[i].received_at if owners else time.monotonic()
            if tid and sent < max(self._removed_all_at, self._removed_at.get(tid, 0.0)):
                continue   # removed after this prompt was sent
            if tid:
                started.append(self._start_target(tid, prompt, src, frame, flow, pred, chosen, stamp))
                state = started[-1].state.value
            out[i] = ObjectResult(tid, src, state, pred.masks[chosen], float(pred.iou_predictions[chosen]),
                                  float(pred.stability_scores[chosen]), False, 0, 0.0, pred, chosen,
                                  prompt.multimask)
        if started:
            # Targets started on one object (a box around a partly hidden object holds its
            # occluder): the shared pixels go to one of them (tracker.separate_starts).
            with self._lock:
                self.tracker.separate_starts(started, list(self._targets.values()), frame.image, flow,
                                             frame.embedding, stamp)
                for i, (tid, _) in enumerate(items):
                    t = self._targets.get(tid) if tid else None
                    if (out[i] is not None and t is not None and any(t is u for u in started)
                            and t.mask is not out[i].mask):
                        out[i] = replace(out[i], mask=t.mask)
        return out

    def _start_target(self, tid: str, prompt: Prompt, source: str, frame: CachedFrame, flow: FlowFrame,
                      pred: MaskPrediction, chosen: int, stamp: float) -> Target:
        with self._lock:
            t = Target(tid, prompt, source)
            t.prompt_size = frame.embedding.original_size
            self.tracker.start(t, frame.image, flow, frame.embedding, pred, chosen, stamp)
            t.flow = flow
            self._targets.pop(tid, None)
            self._targets[tid] = t
            while len(self._targets) > self.config.max_targets:
                _, old = self._targets.popitem(last=False)
                old.state = TargetState.ENDED
                self._ended.append(old)
                self.on_error("targets", f"more than {self.config.max_targets} targets: ended {old.target_id}")
            return t

    def _serve_prompts_in_layer(self) -> None:
        self.serve_prompts()

    # ==== live pipeline =============================================================================
    def start(self, on_result: Callable[[FrameResult], None]) -> None:
        """Start the tracking and model threads; every result (targets per frame, prompts) goes
        to on_result, called on those threads."""
        self._on_result = on_result
        self._running = True
        self._model_idle.set()
        self._threads = [threading.Thread(target=self._tracking_loop, name="sam_tracking", daemon=True),
                         threading.Thread(target=self._model_loop, name="sam_model", daemon=True)]
        for th in self._threads:
            th.start()

    def stop(self) -> None:
        self._running = False
        self._handoff.close()
        self.prompts.notify()
        with self._frames_cond:
            self._frames_cond.notify_all()
        for th in self._threads:
            if th.is_alive() and th is not threading.current_thread():
                th.join(timeout=5)
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def submit(self, convert: Callable[[], Tuple[np.ndarray, int, float, Any]]) -> None:
        """A received frame (live pipeline): `convert()` returns (rgb, key, stamp, meta) and runs
        on the tracking thread (it may raise InputError: reported, the frame is skipped)."""
        with self._frames_cond:
            self._frames.append((convert, time.monotonic()))
            while len(self._frames) > self.config.max_queued_frames:
                self._frames.popleft()
                self.stats.frames_dropped += 1
            self._frames_cond.notify()

    def _tracking_loop(self) -> None:
        while self._running:
            with self._frames_cond:
                if not self._frames:
                    self._frames_cond.wait(0.2)
                if not self._frames:
                    continue
                convert, arrived = self._frames.popleft()
                newest = not self._frames
            try:
                rgb, key, stamp, meta = convert()
                frame = self._make_frame(rgb, key, stamp, meta, arrived)
                t0 = time.perf_counter()
                self._propagate(frame)
                track_ms = (time.perf_counter() - t0) * 1000
                encoded, enc_ms, dec_ms = False, 0.0, 0.0
                if newest and self._model_idle.is_set():
                    # The model is free: this frame is encoded, and published once decoded.
                    done = threading.Event()
                    box: Dict[str, Any] = {}
                    self._model_idle.clear()
                    self._handoff.put((frame, done, box))
                    while self._running and not done.wait(0.5):
                        pass
                    encoded = "error" not in box and "enc_ms" in box
                    enc_ms, dec_ms = box.get("enc_ms", 0.0), box.get("dec_ms", 0.0)
                    if "error" in box:
                        self.on_error("frame", box["error"])
                if not self._running:
                    break
                with self._lock:
                    has_targets = bool(self._targets) or bool(self._ended)
                if has_targets:
                    self._on_result(self._targets_result(frame, encoded, enc_ms, dec_ms, track_ms))
            except InputError as e:
                self.stats.frame_errors += 1
                self.on_error("frame", f"frame skipped: {e}")
            except Exception as e:  # keep tracking whatever happens to one frame
                self.stats.frame_errors += 1
                self.on_error("frame", f"frame failed: {type(e).__name__}: {e}")

    def _model_loop(self) -> None:
        waiting = False
        while self._running:
            if len(self.prompts) or waiting:
                waiting = self.serve_prompts()
            item = self._handoff.take(timeout=0.05 if waiting else 0.2)
            if item is None:
                continue
            frame, done, box = item
            try:
                cached, box["enc_ms"] = self._encode(frame)
                self.serve_prompts()   # requests that were waiting for this frame
                box["dec_ms"] = self._segment_targets(frame, cached)
            except InputError as e:
                box["error"] = f"frame skipped: {e}"
            except Exception as e:  # keep serving whatever happens to one frame
                box["error"] = f"frame failed: {type(e).__name__}: {e}"
            finally:
                self._model_idle.set()
                done.set()


def check_prompt(prompt: Prompt, size: Tuple[int, int]) -> None:
    """Raise InputError unless the prompt's points and box fit an image of `size` (the box is
    clipped to the image in place)."""
    if len(prompt.points):
        validate_points(prompt.points[None], prompt.labels[None], size)
    if prompt.box is not None:
        prompt.box = validate_boxes(prompt.box[None], size)[0]
    if not len(prompt.points) and prompt.box is None and prompt.mask_input is None:
        raise InputError("a prompt needs points, a box or a mask input")
