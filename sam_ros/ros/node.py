"""The sam_ros node: camera frames in, prompts in, masks with IoU scores out.

Threads:
- the executor (main thread) only receives messages: an image goes into a one-item mailbox
  (latest frame wins; a frame replaced before the encoder took it is counted as dropped), a
  prompt into a bounded queue;
- the encoder thread takes the newest frame, computes its embedding into a bounded cache, then
  decodes every active target on it in one batch and publishes;
- prompts decode on the cached embedding of the frame they name, so a prompt waits for the
  decoder only, never for the next encoder pass. On a CPU with the torch backend they are served
  by the encoder thread itself, between frames and between the encoder's layers
  (LayerPreemption): one thread runs all model work, so a prompt gets both cores and a single
  OpenMP pool. Elsewhere (CUDA, compiled or exported encoders) a prompt thread decodes them
  while the encoder runs.
- automatic masks run on request or at a rate, each run in a short-lived thread.
All model math happens in sam_ros.engine; this file converts and wires.

Run: python -m sam_ros.ros.node --ros-args --params-file config/sam_ros.yaml -r image:=/camera/image_raw
"""
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..engine.automatic import AutomaticMaskGenerator
from ..engine.factory import create_predictor
from ..engine.predictor import MaskPrediction
from ..engine.prompts import InputError, Prompt
from ..engine.streaming import CachedFrame, EmbeddingCache, LatestSlot, LayerPreemption, Target, TargetTracker
from ..engine.visualize import draw_masks
from ..model.checkpoint import CheckpointError
from ..msg import MaskCandidate, ObjectMask, Prompt as PromptMsg, PromptArray, SegmentationResult
from . import conversions as conv
from .inbox import Inbox
from .params import NodeParams, declare_parameters
from .spin import run_node

# Prompts: reliable, with a deep reader history so a burst is taken in (and bounded by our own
# queue, which drops and counts the excess) rather than held back by DDS flow control.
RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1000)
RESULTS_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=20)


@dataclass
class PromptRequest:
    """One incoming request (a Prompt, a PromptArray, a click, a detection array)."""
    key: int                       # frame stamp in ns; 0 = latest
    header: Any                    # header to use when key == 0 is resolved
    items: List[Tuple[str, Any]]   # (target_id, sam_ros/Prompt msg or engine Prompt)
    source: str
    received_at: float
    deadline: float
    queue: str = ""


@dataclass
class Stats:
    frames_received: int = 0
    frames_encoded: int = 0
    image_errors: int = 0
    prompts_received: int = 0
    prompts_dropped: int = 0
    prompt_errors: int = 0
    results_published: int = 0
    encoder_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=50))
    decoder_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=50))
    last_error: str = ""
    last_size: Optional[Tuple[int, int]] = None


class SamNode(Node):
    def __init__(self, node_name: str = "sam_ros", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._running = True
        self.params: NodeParams = declare_parameters(self)
        p = self.params
        t0 = time.perf_counter()
        self.predictor = in_own_thread(create_predictor, p.checkpoint, p.model_variant, p.device, p.encoder_dtype,
                                       p.decoder_dtype, p.backend, p.backend_cache_dir)
        self.predictor.stability_offset = p.stability_offset
        model = self.predictor.model
        if getattr(model, "random_weights", False):
            self.get_logger().warning("RANDOM WEIGHTS: the embedded default model is not installed; masks are meaningless")
        self.get_logger().info(
            f"model {getattr(model, 'config', None) and model.img_size}px input on {p.device} "
            f"({p.backend}, encoder {p.encoder_dtype}) loaded in {time.perf_counter() - t0:.1f} s")

        self.cache = EmbeddingCache(p.cache_size)
        self.targets = TargetTracker(max_targets=p.max_targets)
        self.frames: LatestSlot = LatestSlot()
        # CPU + eager torch: one thread runs all model work and serves prompts between the
        # encoder's layers (compiled and exported encoders have no layers to hook; on CUDA the
        # encoder runs on its own stream beside a prompt thread).
        self._single_thread = p.prompt_priority and self.predictor.device.type == "cpu" and p.backend == "torch"
        self._new_prompts = False
        self.preempt = LayerPreemption(lambda: self._new_prompts, self._serve_prompts, p.prompt_priority_max_pause_s)
        if self._single_thread:
            self.preempt.attach(model.image_encoder)
        self.stats = Stats()
        self._prompt_cond = threading.Condition()
        # One bounded queue per input (prompt, prompts, click, detection): a flood on one topic
        # drops (and counts) its own oldest requests, never another input's.
        self._prompts: Dict[str, Deque[PromptRequest]] = {}
        self._click_count = 0
        self._last_click_target = ""
        self._fps_window: Deque[Tuple[float, int, int]] = deque(maxlen=30)
        self._colors: Dict[str, int] = {}

        self.pub_results = self.create_publisher(SegmentationResult, "segmentation", RESULTS_QOS)
        self.pub_overlay = self.create_publisher(Image, "segmentation/overlay", qos_profile_sensor_data)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        image_qos = qos_profile_sensor_data if p.image_qos == "sensor_data" else RELIABLE
        if p.image_qos not in ("sensor_data", "reliable"):
            self.get_logger().warning(f"unknown image_qos {p.image_qos!r}; using sensor_data")
            image_qos = qos_profile_sensor_data
        image_topic = self.resolve_topic_name(p.image_topic)
        if p.image_transport == "compressed":
            self.create_subscription(CompressedImage, image_topic + "/compressed", self._on_image, image_qos)
        else:
            self.create_subscription(Image, image_topic, self._on_image, image_qos)
        # Prompt inputs skip the executor: a thread of their own takes them (sam_ros.ros.inbox).
        self.inbox = Inbox(self, "prompt_inbox", on_error=lambda m: self._report("prompts", m))
        self.inbox.create_subscription(PromptMsg, "prompt", self._on_prompt, RELIABLE)
        self.inbox.create_subscription(PromptArray, "prompts", self._on_prompt_array, RELIABLE)
        click_topic = p.click_topic or image_topic + "_mouse_left"
        self.inbox.create_subscription(Point, click_topic, lambda m: self._on_click(m, 1), RELIABLE)
        if p.bg_click_topic:
            self.inbox.create_subscription(Point, p.bg_click_topic, lambda m: self._on_click(m, 0), RELIABLE)
        self.create_subscription(String, "clear_targets", self._on_clear_topic, RELIABLE)
        self.create_service(Trigger, "~/clear_targets", self._on_clear_service)
        self.create_service(Trigger, "~/segment_everything", self._on_segment_everything)
        self._auto_request = threading.Event()
        self._auto_generator = AutomaticMaskGenerator(
            self.predictor, points_per_side=p.auto_points_per_side, pred_iou_thresh=p.auto_pred_iou_thresh,
            stability_score_thresh=p.auto_stability_thresh, min_mask_region_area=p.auto_min_region_area)
        self._subscribe_detections(p.detections_topic)
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)

        self._encoder_thread = threading.Thread(target=self._encoder_loop, name="sam_encoder", daemon=True)
        self._prompt_thread = None
        if not self._single_thread:
            self._prompt_thread = threading.Thread(target=self._prompt_loop, name="sam_prompts", daemon=True)
        self._auto_thread = threading.Thread(target=self._auto_loop, name="sam_auto", daemon=True)
        self._encoder_thread.start()
        if self._prompt_thread is not None:
            self._prompt_thread.start()
        self._auto_thread.start()
        self.inbox.start()
        self.get_logger().info(f"listening on {image_topic} ({p.image_transport}, {p.image_qos}); clicks on {click_topic}")

    # ---- inputs (executor or inbox thread: store and return) ----------------------------------
    def _on_image(self, msg) -> None:
        self.stats.frames_received += 1
        self.frames.put((msg, time.monotonic()))

    def _enqueue(self, req: PromptRequest, queue: str) -> None:
        with self._prompt_cond:
            self.stats.prompts_received += len(req.items)
            req.queue = queue
            q = self._prompts.setdefault(queue, deque())
            while len(q) >= self.params.max_pending_prompts:
                dropped = q.popleft()
                self.stats.prompts_dropped += len(dropped.items)
                self._report("prompts", f"{queue} queue full ({self.params.max_pending_prompts} requests): "
                                        "dropped the oldest request")
            q.append(req)
            self._new_prompts = True
            self._prompt_cond.notify()
        if self._single_thread:
            self.frames.wake()  # the encoder thread serves prompts

    def _pending(self) -> int:
        return sum(len(q) for q in self._prompts.values())

    def _request(self, header, items, source) -> PromptRequest:
        now = time.monotonic()
        return PromptRequest(conv.stamp_key(header.stamp) if header is not None else 0, header, items, source,
                             now, now + self.params.prompt_wait_s)

    def _on_prompt(self, msg) -> None:
        self._enqueue(self._request(msg.header, [(msg.target_id, msg)], "prompt"), "prompt")

    def _on_prompt_array(self, msg) -> None:
        if not msg.prompts:
            self._report("prompts", "empty PromptArray ignored")
            return
        self._enqueue(self._request(msg.header, [(p.target_id, p) for p in msg.prompts], "prompt"), "prompts")

    def _on_click(self, msg, label: int) -> None:
        point = np.array([[msg.x, msg.y]])
        if label == 0:
            target = self.targets.get(self._last_click_target) if self._last_click_target else None
            if target is None:
                self._report("prompts", "background click with no click target to refine: ignored")
                return
            p = target.prompt
            prompt = Prompt(np.concatenate([p.points, point]), np.concatenate([p.labels, [0]]), p.box, None, False)
            self._enqueue(self._request(None, [(target.target_id, prompt)], "click"), "click")
            return
        if self.params.click_mode == "target":
            self._click_count += 1
            target_id = f"click_{self._click_count}"
            self._last_click_target = target_id
        else:
            target_id = ""
        prompt = Prompt(point, np.array([1]), None, None, multimask=self.params.multimask)
        self._enqueue(self._request(None, [(target_id, prompt)], "click"), "click")

    def _subscribe_detections(self, topic: str) -> None:
        if not topic:
            return
        try:
            from vision_msgs.msg import Detection2DArray  # optional dependency
        except ImportError:
            self.get_logger().info("vision_msgs is not installed: Detection2DArray input disabled")
            return
        self.inbox.create_subscription(Detection2DArray, topic, self._on_detections, RELIABLE)

    def _on_detections(self, msg) -> None:
        try:
            boxes = conv.boxes_from_detections(msg)
        except Exception as e:  # malformed message of an optional type
            self._report("prompts", f"bad Detection2DArray: {e}")
            return
        if len(boxes) == 0:
            return
        items = [(getattr(d, "id", "") or "", Prompt(box=b, multimask=False)) for d, b in zip(msg.detections, boxes)]
        self._enqueue(self._request(msg.header, items, "detection"), "detection")

    def _on_clear_topic(self, msg: String) -> None:
        n = self.targets.clear(msg.data)
        self.get_logger().info(f"cleared {n} target(s) ({msg.data or 'all'})")

    def _on_segment_everything(self, request, response):
        if self.cache.latest() is None:
            response.success = False
            response.message = "no frame has been encoded yet"
            return response
        self._auto_request.set()
        response.success = True
        response.message = "automatic masks of the latest frame will be published on segmentation"
        return response

    def _on_clear_service(self, request, response):
        n = self.targets.clear("")
        response.success = True
        response.message = f"cleared {n} target(s)"
        return response

    # ---- encoder thread ---------------------------------------------------------------------
    def _encoder_loop(self) -> None:
        waiting = False
        while self._running:
            if self._single_thread and (self._new_prompts or waiting):
                waiting = self._serve_prompts()
            item = self.frames.take(timeout=0.05 if waiting else 0.2)
            if item is None:
                continue
            msg, arrived = item
            try:
                self._encode_frame(msg, arrived)
            except InputError as e:
                self.stats.image_errors += 1
                self._report("image", f"frame skipped: {e}")
            except Exception as e:  # keep serving whatever happens to one frame
                if not self.context.ok():
                    break  # shutting down
                self.stats.image_errors += 1
                self._report("image", f"frame failed: {type(e).__name__}: {e}")

    def _encode_frame(self, msg, arrived: float) -> None:
        key = conv.stamp_key(msg.header.stamp)
        rgb = conv.to_rgb(msg)
        size = rgb.shape[:2]
        if self.stats.last_size is not None and size != self.stats.last_size:
            self.get_logger().info(f"camera resolution changed {self.stats.last_size} -> {size}")
        self.stats.last_size = size
        t0 = time.perf_counter()
        self.preempt.begin_job()
        emb = self.predictor.encode(rgb)
        # Encoder compute time: prompts served between its layers are not encoder time.
        enc_ms = (time.perf_counter() - t0 - self.preempt.job_paused_s) * 1000
        self.stats.encoder_ms.append(enc_ms)
        self.stats.frames_encoded += 1
        frame = CachedFrame(key, emb, msg.header, rgb, enc_ms, arrived)
        self.cache.add(frame)
        if self._single_thread:
            self._serve_prompts()  # requests that were waiting for this frame
        else:
            with self._prompt_cond:
                self._prompt_cond.notify()  # prompts may be waiting for this frame
        overlay: List[Tuple[str, np.ndarray, float]] = []
        if len(self.targets):
            overlay = self._segment_targets(frame)
        if self.params.publish_overlay and self.pub_overlay.get_subscription_count() > 0:
            self._publish_overlay(frame, overlay)

    def _segment_targets(self, frame: CachedFrame) -> List[Tuple[str, np.ndarray, float]]:
        size = frame.embedding.original_size
        pairs = self.targets.prompts_for(size)
        t0 = time.perf_counter()
        try:
            preds = self.predictor.predict_prompts(frame.embedding, [p for _, p in pairs])
        except InputError as e:
            self._report("targets", f"active targets could not be decoded on this frame: {e}")
            return []
        dec_ms = (time.perf_counter() - t0) * 1000
        self.stats.decoder_ms.append(dec_ms)
        objects, drawn = [], []
        for (target, prompt), pred in zip(pairs, preds):
            chosen = int(np.argmax(pred.iou_predictions))
            self.targets.update(target, pred, chosen, size)
            objects.append(self._object_msg(target.target_id, "target", pred, prompt.multimask, chosen))
            drawn.append((target.target_id, pred.masks[chosen], float(pred.iou_predictions[chosen])))
        self._publish_result(frame, objects, frame.encoder_ms, dec_ms)
        return drawn

    # ---- prompt thread ----------------------------------------------------------------------
    def _prompt_loop(self) -> None:
        """The prompt thread (when the encoder does not serve prompts itself)."""
        waiting = False
        while self._running:
            with self._prompt_cond:
                if not self._new_prompts:
                    # New frames notify too: requests may be waiting for one.
                    self._prompt_cond.wait(0.05 if waiting else 0.2)
            waiting = self._serve_prompts()

    def _serve_prompts(self) -> bool:
        """Decode every queued request whose frame is cached; requests whose frame is still on its
        way go back to the queue. Returns whether any are waiting."""
        with self._prompt_cond:
            self._new_prompts = False
            pending = [req for q in self._prompts.values() for req in q]
            for q in self._prompts.values():
                q.clear()
        if not pending:
            return False
        waiting = []
        # Requests for the same frame decode together.
        groups: Dict[int, List[PromptRequest]] = {}
        for req in pending:
            groups.setdefault(req.key, []).append(req)
        for key, reqs in groups.items():
            frame = self.cache.latest() if key == 0 else self.cache.get(key)
            if frame is None:
                waiting.extend(self._frame_not_ready(key, reqs))
                continue
            try:
                self._decode_requests(frame, reqs)
            except Exception as e:  # keep serving the other prompts
                if not self.context.ok():
                    return False
                self.stats.prompt_errors += sum(len(r.items) for r in reqs)
                self._report("prompts", f"decoding failed: {type(e).__name__}: {e}")
        if waiting:
            with self._prompt_cond:
                for req in reversed(waiting):
                    self._prompts.setdefault(req.queue, deque()).appendleft(req)
        return bool(waiting)

    def _frame_not_ready(self, key: int, reqs: List[PromptRequest]) -> List[PromptRequest]:
        """Requests that may still get their frame are returned to wait; others are reported."""
        latest = self.cache.latest()
        keep = []
        now = time.monotonic()
        for req in reqs:
            newer_than_cache = latest is None or key > latest.key
            if now < req.deadline and (key == 0 or newer_than_cache):
                keep.append(req)  # the frame is on its way (or no frame yet): wait
                continue
            self.stats.prompt_errors += len(req.items)
            if key == 0:
                self._report("prompts", "no camera frame has been received yet: prompt dropped")
            elif newer_than_cache:
                self._report("prompts", f"frame {key * 1e-9:.3f}s was not encoded within {self.params.prompt_wait_s}s "
                                        "(dropped: latest frame wins): prompt dropped")
            else:
                self._report("prompts", f"frame {key * 1e-9:.3f}s is no longer cached (cache holds the last "
                                        f"{self.cache.capacity} frames): prompt dropped")
        return keep

    def _decode_requests(self, frame: CachedFrame, reqs: List[PromptRequest]) -> None:
        size = frame.embedding.original_size
        low_res = self.predictor.low_res_size
        prompts: List[Prompt] = []
        owners: List[Tuple[PromptRequest, str]] = []
        for req in reqs:
            for target_id, item in req.items:
                try:
                    prompt = item if isinstance(item, Prompt) else conv.prompt_from_msg(item, size, low_res)
                    self._check_prompt(prompt, size)
                except InputError as e:
                    self.stats.prompt_errors += 1
                    self._report("prompts", f"prompt {target_id or '(one-shot)'} rejected: {e}")
                    continue
                prompts.append(prompt)
                owners.append((req, target_id))
        if not prompts:
            return
        t0 = time.perf_counter()
        try:
            preds = self.predictor.predict_prompts(frame.embedding, prompts)
        except InputError as e:  # defensive: _check_prompt should have caught it
            self.stats.prompt_errors += len(prompts)
            self._report("prompts", f"prompts rejected: {e}")
            return
        dec_ms = (time.perf_counter() - t0) * 1000
        self.stats.decoder_ms.append(dec_ms)
        by_req: Dict[int, List[Any]] = {}
        for (req, target_id), prompt, pred in zip(owners, prompts, preds):
            chosen = int(np.argmax(pred.iou_predictions))
            by_req.setdefault(id(req), [req]).append(self._object_msg(target_id, req.source, pred, prompt.multimask, chosen))
            if target_id:
                target = Target(target_id, prompt, size, source=req.source)
                self.targets.update(target, pred, chosen, size)
                self.targets.set(target)
        for _, (req, *objects) in by_req.items():
            self._publish_result(frame, objects, 0.0, dec_ms, received_at=req.received_at)

    def _check_prompt(self, prompt: Prompt, size: Tuple[int, int]) -> None:
        from ..engine.prompts import validate_boxes, validate_points

        if len(prompt.points):
            validate_points(prompt.points[None], prompt.labels[None], size)
        if prompt.box is not None:
            prompt.box = validate_boxes(prompt.box[None], size)[0]

    # ---- automatic masks thread ---------------------------------------------------------------
    def _auto_loop(self) -> None:
        rate = self.params.auto_masks_rate
        period = 1.0 / rate if rate > 0 else None
        last_key = None
        while self._running:
            triggered = self._auto_request.wait(timeout=period if period else 0.2)
            if not self._running:
                break
            if not triggered and period is None:
                continue
            self._auto_request.clear()
            frame = self.cache.latest()
            if frame is None or (not triggered and frame.key == last_key):
                continue
            last_key = frame.key
            try:
                # A fresh thread per run: its OpenMP pool goes away with it (see LayerPreemption).
                in_own_thread(self._publish_auto_masks, frame)
            except Exception as e:  # keep the node serving
                if not self.context.ok():
                    break
                self._report("auto", f"automatic masks failed: {type(e).__name__}: {e}")

    def _publish_auto_masks(self, frame: CachedFrame) -> None:
        region = self.params.auto_region
        region = region if len(region) == 4 and region[2] > region[0] and region[3] > region[1] else None
        t0 = time.perf_counter()
        records = self._auto_generator.generate(frame.image, region=region, embedding=frame.embedding)
        dec_ms = (time.perf_counter() - t0) * 1000
        objects = []
        for i, rec in enumerate(sorted(records, key=lambda r: -r["area"])):
            mask = rec["segmentation"]
            pred = MaskPrediction(mask[None], np.array([rec["predicted_iou"]]), np.zeros((1, 1, 1)),
                                  np.array([rec["stability_score"]]))
            objects.append(self._object_msg(f"auto/{i}", "auto", pred, False, 0))
        self._publish_result(frame, objects, 0.0, dec_ms)

    # ---- outputs ----------------------------------------------------------------------------
    def _object_msg(self, target_id: str, source: str, pred: MaskPrediction, multimask: bool, chosen: int) -> ObjectMask:
        obj = ObjectMask(target_id=target_id, source=source)
        cands = [self._candidate(pred, i) for i in range(len(pred.iou_predictions))]
        best = cands[chosen]
        obj.bbox, obj.mask, obj.iou, obj.stability, obj.area = best.bbox, best.mask, best.iou, best.stability, best.area
        if multimask and len(cands) > 1:
            obj.candidates = cands
            obj.chosen = chosen
        else:
            obj.chosen = -1
        return obj

    @staticmethod
    def _candidate(pred: MaskPrediction, i: int) -> MaskCandidate:
        mask = pred.masks[i]
        c = MaskCandidate(iou=float(pred.iou_predictions[i]), stability=float(pred.stability_scores[i]))
        box = conv.mask_crop(mask)
        c.mask = Image()
        if box is not None:
            x, y, w, h = box
            c.bbox = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
            roi = mask[y : y + h, x : x + w]
            conv.fill_image_msg(c.mask, roi.view(np.uint8) * np.uint8(255), "mono8")
            c.area = int(np.count_nonzero(roi))
        return c

    def _publish_result(self, frame: CachedFrame, objects: List[ObjectMask], enc_ms: float, dec_ms: float,
                        received_at: Optional[float] = None) -> None:
        res = SegmentationResult(header=frame.meta, objects=objects, encoder_ms=float(enc_ms), decoder_ms=float(dec_ms))
        res.height, res.width = frame.embedding.original_size
        start = received_at if received_at is not None else frame.received_at
        res.latency_ms = float((time.monotonic() - start) * 1000)
        self.pub_results.publish(res)
        self.stats.results_published += 1

    def _publish_overlay(self, frame: CachedFrame, drawn: List[Tuple[str, np.ndarray, float]]) -> None:
        # Colours by order of first appearance: distinct for the first targets, stable per id.
        keys = [self._colors.setdefault(tid, len(self._colors)) for tid, _, _ in drawn]
        image = draw_masks(frame.image, [m for _, m, _ in drawn],
                           labels=[f"{tid} {iou:.2f}" for tid, _, iou in drawn],
                           keys=keys, alpha=self.params.overlay_alpha)
        msg = conv.fill_image_msg(Image(), image, "rgb8")
        msg.header = frame.meta
        self.pub_overlay.publish(msg)

    def _report(self, kind: str, message: str) -> None:
        self.stats.last_error = f"{kind}: {message}"
        self.get_logger().warning(message, throttle_duration_sec=1.0)

    def _publish_diagnostics(self) -> None:
        s = self.stats
        now = time.monotonic()
        self._fps_window.append((now, s.frames_received, s.frames_encoded))
        t_old, rx_old, enc_old = self._fps_window[0]
        dt = max(1e-6, now - t_old)
        fps_in = (s.frames_received - rx_old) / dt if len(self._fps_window) > 1 else 0.0
        fps_out = (s.frames_encoded - enc_old) / dt if len(self._fps_window) > 1 else 0.0
        enc = float(np.mean(s.encoder_ms)) if s.encoder_ms else 0.0
        dec = float(np.mean(s.decoder_ms)) if s.decoder_ms else 0.0
        status = DiagnosticStatus(name=f"{self.get_name()}: segmentation", hardware_id=self.params.device)
        errors = s.image_errors + s.prompt_errors
        status.level = DiagnosticStatus.WARN if s.last_error else DiagnosticStatus.OK
        if s.frames_received == 0:
            status.message = "waiting for camera frames"
        else:
            status.message = f"{fps_out:.1f} fps encoded of {fps_in:.1f} fps in, {len(self.targets)} targets, {errors} errors"
        values = {
            "frames_received": s.frames_received, "frames_encoded": s.frames_encoded,
            "frames_dropped": self.frames.dropped, "fps_in": round(fps_in, 2), "fps_encoded": round(fps_out, 2),
            "encoder_ms": round(enc, 1), "decoder_ms": round(dec, 1), "prompts_received": s.prompts_received,
            "prompts_dropped": s.prompts_dropped, "prompt_errors": s.prompt_errors, "image_errors": s.image_errors,
            "results_published": s.results_published, "active_targets": len(self.targets),
            "encoder_pauses_for_prompts": self.preempt.pauses,
            "encoder_paused_ms": round(self.preempt.paused_s * 1000, 1),
            "cached_frames": len(self.cache), "pending_prompt_requests": self._pending(),
            "last_error": s.last_error,
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)

    def destroy_node(self) -> None:
        self._running = False
        if hasattr(self, "inbox"):
            self.inbox.stop()
        # The constructor may have failed part-way (e.g. a bad checkpoint): stop what exists.
        if hasattr(self, "frames"):
            self.frames.close()
        if hasattr(self, "_prompt_cond"):
            with self._prompt_cond:
                self._prompt_cond.notify_all()
        if hasattr(self, "_auto_request"):
            self._auto_request.set()
        for name in ("_encoder_thread", "_prompt_thread", "_auto_thread"):
            thread = getattr(self, name, None)
            if thread is not None and thread.is_alive():
                thread.join(timeout=5)
        super().destroy_node()


def in_own_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on a fresh thread that ends with it; returns its result or raises its exception.

    For model work off the node's model thread (loading at start-up, automatic masks): libgomp
    gives every thread that calls into torch its own OpenMP pool, kept until the thread exits,
    and once the pools together hold more threads than there are cores, every pool stops
    spin-waiting between operators. Measured on the 2-core CPU: the decoder's 7.5 ms becomes
    13 ms. A thread that ends takes its pool with it."""
    out: Dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn(*args)
        except BaseException as e:  # re-raised on the caller's thread
            out["error"] = e

    thread = threading.Thread(target=run, name=f"sam_{getattr(fn, '__name__', 'work')}", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("result")


def main(args=None) -> int:
    return run_node(SamNode, args, startup_errors=(CheckpointError, RuntimeError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
