"""The sam_ros node: camera frames in, prompts in, masks with IoU scores out, for every tracked
target on every received frame.

The node converts messages and wires topics to the engine's StreamingSession, which owns the
scheduling (sam_ros.engine.session): a tracking thread takes every frame in order and moves the
targets to it by optical flow; the model thread encodes the newest frame whenever it is free,
re-segments the targets on it and decodes prompts on cached embeddings (between the encoder's
layers on a CPU). Prompt topics are taken by a thread of their own (sam_ros.ros.inbox), not by
the executor. Automatic masks run on request or at a rate, each run in a short-lived thread.

Run: python -m sam_ros.ros.node --ros-args --params-file config/sam_ros.yaml -r image:=/camera/image_raw
"""
import dataclasses
import gc
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..engine.automatic import AutomaticMaskGenerator
from ..engine.mask_utils import label_image
from ..engine.factory import create_predictor
from ..engine.predictor import MaskPrediction
from ..engine.prompt_queue import PromptRequest
from ..engine.prompts import Prompt
from ..engine.session import FrameResult, ObjectResult, SessionConfig, StreamingSession
from ..engine.tracking.tracker import TrackingConfig
from ..engine.visualize import draw_masks
from ..model.checkpoint import CheckpointError
from ..msg import MaskCandidate, ObjectMask, Prompt as PromptMsg, PromptArray, SegmentationResult
from . import conversions as conv
from .inbox import Inbox
from .depth_outputs import DepthOutputs
from .params import NodeParams, check_values, declare_parameters
from .spin import run_node

# Prompts: reliable, with a deep reader history so a burst is taken in (and bounded by the
# session's queues, which drop and count the excess) rather than held back by DDS flow control.
RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1000)
RESULTS_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=20)
# Per-frame images and arrays beside the results: reliable (matches reliable and best-effort
# readers), a short history (a slow reader loses old frames, it never holds the node back).
FRAMES_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5)


class SamCore:
    """The node's work in the steps a managed (lifecycle) node takes one at a time: declare the
    parameters (construction), load the model (configure), open the inputs and outputs and start
    the session (activate), close them (deactivate), free the model (cleanup). SamNode runs the
    first three at construction; sam_ros.ros.lifecycle_node.SamLifecycleNode on transitions.
    Mixed into an rclpy Node (or LifecycleNode)."""

    def _setup_parameters(self) -> None:
        self.predictor = None
        self.session = None
        self.depth = None
        self._auto_generator = None
        self._running = False
        self._entities: List[Tuple[Callable[[Any], Any], Any]] = []   # (destroy function, entity) of _open
        self._last_error = ""
        self._click_count = 0
        self._last_click_target = ""
        self._fps_window: Deque[Tuple[float, int, int]] = deque(maxlen=30)
        self._colors: Dict[str, int] = {}
        self._labels: Dict[str, int] = {}     # target id -> its value in segmentation/labels
        self._next_label = 1
        self._results_published = 0
        self._auto_request = threading.Event()
        self._auto_thread = None
        self.params: NodeParams = declare_parameters(self)   # last: ValueError for a bad value given at start
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _load_model(self) -> None:
        p = self.params
        t0 = time.perf_counter()
        self.predictor, warm_s = in_own_thread(_load_and_warm_up, p.checkpoint, p.model_variant, p.device,
                                               p.encoder_dtype, p.decoder_dtype, p.backend, p.backend_cache_dir)
        self.predictor.stability_offset = p.stability_offset
        model = self.predictor.model
        if getattr(model, "random_weights", False):
            self.get_logger().warning("RANDOM WEIGHTS: the embedded default model is not installed; masks are meaningless")
        self.get_logger().info(
            f"model {getattr(model, 'config', None) and model.img_size}px input on {p.device} "
            f"({p.backend}, encoder {p.encoder_dtype}) loaded in {time.perf_counter() - t0:.1f} s "
            f"(first encode and decode on a blank frame: {warm_s:.2f} s)")
        self._auto_generator = self._make_auto_generator(p)

    def _free_model(self) -> None:
        self.predictor, self._auto_generator = None, None
        gc.collect()
        self.get_logger().info("model freed")

    def _keep(self, destroy: Callable[[Any], Any], entity: Any) -> Any:
        self._entities.append((destroy, entity))
        return entity

    def _open(self) -> None:
        p = self.params
        self.session = StreamingSession(self.predictor, SessionConfig(
            cache_size=p.cache_size, max_targets=p.max_targets, max_pending_prompts=p.max_pending_prompts,
            prompt_wait_s=p.prompt_wait_s, max_queued_frames=p.max_queued_frames,
            prompt_priority=p.prompt_priority, max_pause_s=p.prompt_priority_max_pause_s,
            tracking=TrackingConfig(occluded_s=p.occluded_s, lost_s=p.lost_s)), on_error=self._report)
        pub = lambda *a: self._keep(self.destroy_publisher, self.create_publisher(*a))  # noqa: E731
        sub = lambda *a: self._keep(self.destroy_subscription, self.create_subscription(*a))  # noqa: E731
        self.pub_results = pub(SegmentationResult, "segmentation", RESULTS_QOS)
        self.pub_overlay = pub(Image, "segmentation/overlay", qos_profile_sensor_data)
        self.pub_diag = pub(DiagnosticArray, "/diagnostics", 10)
        # Standard outputs beside ours: an instance-label image, and the targets as detections.
        self.pub_labels = pub(Image, "segmentation/labels", FRAMES_QOS)
        try:
            import vision_msgs.msg as vision_msgs  # optional dependency
        except ImportError:
            self._vision_msgs, self.pub_detections = None, None
        else:
            self._vision_msgs = vision_msgs
            self.pub_detections = pub(vision_msgs.Detection2DArray, "segmentation/detections", FRAMES_QOS)

        image_qos = qos_profile_sensor_data if p.image_qos == "sensor_data" else RELIABLE
        if p.image_qos not in ("sensor_data", "reliable"):
            self.get_logger().warning(f"unknown image_qos {p.image_qos!r}; using sensor_data")
            image_qos = qos_profile_sensor_data
        image_topic = self.resolve_topic_name(p.image_topic)
        if p.image_transport == "compressed":
            sub(CompressedImage, image_topic + "/compressed", self._on_image, image_qos)
        else:
            sub(Image, image_topic, self._on_image, image_qos)
        # Prompt inputs skip the executor: a thread of their own takes them (sam_ros.ros.inbox).
        self.inbox = Inbox(self, "prompt_inbox", on_error=lambda m: self._report("prompts", m))
        self.inbox.create_subscription(PromptMsg, "prompt", self._on_prompt, RELIABLE)
        self.inbox.create_subscription(PromptArray, "prompts", self._on_prompt_array, RELIABLE)
        click_topic = p.click_topic or image_topic + "_mouse_left"
        self.inbox.create_subscription(Point, click_topic, lambda m: self._on_click(m, 1), RELIABLE)
        if p.bg_click_topic:
            self.inbox.create_subscription(Point, p.bg_click_topic, lambda m: self._on_click(m, 0), RELIABLE)
        sub(String, "clear_targets", self._on_clear_topic, RELIABLE)
        self._keep(self.destroy_service, self.create_service(Trigger, "~/clear_targets", self._on_clear_service))
        self._keep(self.destroy_service, self.create_service(Trigger, "~/segment_everything",
                                                             self._on_segment_everything))
        self._subscribe_detections(p.detections_topic)
        self.depth = (DepthOutputs(self, p.depth_topic, p.depth_info_topic, FRAMES_QOS, self._report)
                      if p.depth_topic else None)
        self._keep(self.destroy_timer, self.create_timer(p.diagnostics_period_s, self._publish_diagnostics))

        self._running = True
        self.session.start(self._publish)
        self._auto_request.clear()
        self._auto_thread = threading.Thread(target=self._auto_loop, name="sam_auto", daemon=True)
        self._auto_thread.start()
        self.inbox.start()
        depth = f"; depth on {self.depth.depth_topic} ({self.depth.info_topic})" if self.depth else ""
        self.get_logger().info(f"listening on {image_topic} ({p.image_transport}, {p.image_qos}); "
                               f"clicks on {click_topic}{depth}")

    def _close(self) -> None:
        """Stops the threads and destroys what _open made (also after a part-way _open)."""
        self._running = False
        if getattr(self, "inbox", None) is not None:
            self.inbox.destroy()
            self.inbox = None
        if self.session is not None:
            self.session.stop()
        self._auto_request.set()
        if self._auto_thread is not None and self._auto_thread.is_alive():
            self._auto_thread.join(timeout=5)
        self._auto_thread = None
        if self.depth is not None:
            self.depth.destroy()
            self.depth = None
        for destroy, entity in reversed(self._entities):
            destroy(entity)
        self._entities = []
        self.session = None


    # ---- inputs (executor or inbox thread: convert, hand over, return) --------------------------
    def _on_image(self, msg) -> None:
        def convert():  # on the session's tracking thread
            return conv.to_rgb(msg), conv.stamp_key(msg.header.stamp), conv.stamp_seconds(msg.header.stamp), msg.header
        self.session.submit(convert)

    def _request(self, header, items, source: str, queue: str = "") -> None:
        key = conv.stamp_key(header.stamp) if header is not None else 0
        self.session.request(PromptRequest(key, items, source, header), queue or source)

    def _on_prompt(self, msg) -> None:
        self._request(msg.header, [(msg.target_id, _msg_prompt(msg))], "prompt")

    def _on_prompt_array(self, msg) -> None:
        if not msg.prompts:
            self._report("prompts", "empty PromptArray ignored")
            return
        self._request(msg.header, [(p.target_id, _msg_prompt(p)) for p in msg.prompts], "prompt", "prompts")

    def _on_click(self, msg, label: int) -> None:
        point = np.array([[msg.x, msg.y]])
        if label == 0:
            target = next((t for t in self.session.targets() if t.target_id == self._last_click_target), None)
            if target is None:
                self._report("prompts", "background click with no click target to refine: ignored")
                return
            p = target.prompt
            prompt = Prompt(np.concatenate([p.points, point]), np.concatenate([p.labels, [0]]), p.box, None, False)
            self._request(None, [(target.target_id, prompt)], "click")
            return
        if self.params.click_mode == "target":
            self._click_count += 1
            target_id = f"click_{self._click_count}"
            self._last_click_target = target_id
        else:
            target_id = ""
        self._request(None, [(target_id, Prompt(point, np.array([1]), None, None, multimask=self.params.multimask))],
                      "click")

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
        self._request(msg.header, items, "detection")

    def _on_clear_topic(self, msg: String) -> None:
        n = self.session.remove_target(msg.data)
        self.get_logger().info(f"cleared {n} target(s) ({msg.data or 'all'})")

    def _on_clear_service(self, request, response):
        n = self.session.remove_target("")
        response.success = True
        response.message = f"cleared {n} target(s)"
        return response

    def _on_segment_everything(self, request, response):
        if self.session.cache.latest() is None:
            response.success = False
            response.message = "no frame has been encoded yet"
            return response
        self._auto_request.set()
        response.success = True
        response.message = "automatic masks of the latest frame will be published on segmentation"
        return response

    # ---- runtime parameters (ros2 param set; the standard parameter services) ---------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Validate all, then apply all (or none): thresholds, multimask, overlay, automatic masks,
        queue bounds and tracking settings take effect on the next frame / prompt; the model, topics
        and thread layout are rejected with the reason (they need a restart)."""
        # Before the model is loaded (a lifecycle node not yet configured) every parameter may change.
        values, why = check_values({prm.name: prm.value for prm in parameters}, self.params,
                                   at_start=self.predictor is None)
        if why:
            self.get_logger().warning(f"parameter change rejected: {why}")
            return SetParametersResult(successful=False, reason=why)
        if not values:
            return SetParametersResult(successful=True)
        old, p = self.params, dataclasses.replace(self.params, **values)
        self.params = p
        if self.session is not None:
            self.session.update_config(
                cache_size=p.cache_size, max_targets=p.max_targets, max_pending_prompts=p.max_pending_prompts,
                prompt_wait_s=p.prompt_wait_s, max_queued_frames=p.max_queued_frames,
                max_pause_s=p.prompt_priority_max_pause_s, tracking={"occluded_s": p.occluded_s, "lost_s": p.lost_s})
        if self.predictor is None:
            return SetParametersResult(successful=True)   # taken at configure
        self.predictor.stability_offset = p.stability_offset
        if any(getattr(old, n) != getattr(p, n) for n in ("auto_points_per_side", "auto_pred_iou_thresh",
                                                           "auto_stability_thresh", "auto_min_region_area",
                                                           "stability_offset")):
            self._auto_generator = self._make_auto_generator(p)
        self.get_logger().info("parameters set: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
        return SetParametersResult(successful=True)

    def _make_auto_generator(self, p: NodeParams) -> AutomaticMaskGenerator:
        return AutomaticMaskGenerator(
            self.predictor, points_per_side=p.auto_points_per_side, pred_iou_thresh=p.auto_pred_iou_thresh,
            stability_score_thresh=p.auto_stability_thresh, stability_score_offset=p.stability_offset,
            min_mask_region_area=p.auto_min_region_area)

    # ---- automatic masks thread ---------------------------------------------------------------
    def _auto_loop(self) -> None:
        last_key = None
        last_run = time.monotonic()
        while self._running:
            triggered = self._auto_request.wait(timeout=0.1)   # the rate is a runtime parameter: re-read
            if not self._running:
                break
            rate = self.params.auto_masks_rate
            if not triggered and (rate <= 0 or time.monotonic() - last_run < 1.0 / rate):
                continue
            last_run = time.monotonic()
            self._auto_request.clear()
            frame = self.session.cache.latest()
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

    def _publish_auto_masks(self, frame) -> None:
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
            objects.append(ObjectResult(f"auto/{i}", "auto", "", mask, float(rec["predicted_iou"]),
                                        float(rec["stability_score"]), prediction=pred))
        res = self._result_msg(frame.meta, frame.embedding.original_size, objects, False, 0.0, dec_ms, 0.0,
                               frame.received_at)
        self.pub_results.publish(res)

    # ---- outputs (session threads) -------------------------------------------------------------
    def _publish(self, result: FrameResult) -> None:
        """A session result (targets on a frame, or the answer to a prompt request) -> messages."""
        if not self._running:
            return
        header = result.meta if result.meta is not None else result.frame.meta
        labels = self._target_labels(result.objects) if result.kind == "targets" else None
        res = self._result_msg(header, result.frame.size, result.objects, result.encoded, result.encoder_ms,
                               result.decoder_ms, result.track_ms, result.received_at, labels)
        self.pub_results.publish(res)
        self._results_published += 1
        if result.kind != "targets":
            return
        if self.params.publish_overlay and self.pub_overlay.get_subscription_count() > 0:
            self._publish_overlay(result)
        if self.depth is not None:
            self.depth.publish(header, result.frame.size, [(o.target_id, label, o.mask, o.source, o.iou)
                                                           for o, label in zip(result.objects, labels)])
        if self.pub_labels.get_subscription_count() > 0:
            image = label_image(result.frame.size, [o.mask for o in result.objects], labels)
            msg = conv.fill_image_msg(Image(), image, "mono16")
            msg.header = header
            self.pub_labels.publish(msg)
        if self.pub_detections is not None and self.pub_detections.get_subscription_count() > 0:
            dets = [(o.target_id, o.source, (ob.bbox.x_offset, ob.bbox.y_offset, ob.bbox.width, ob.bbox.height), o.iou)
                    for o, ob in zip(result.objects, res.objects) if o.mask is not None and ob.area > 0]
            self.pub_detections.publish(conv.detection2d_array(self._vision_msgs, header, dets))

    def _target_labels(self, objects: List[ObjectResult]) -> List[int]:
        """Each target's value in segmentation/labels: given at its first result, kept for its
        life, freed when it ends (1..65535, wrapping round past values still in use)."""
        out = []
        for o in objects:
            label = self._labels.get(o.target_id)
            if label is None:
                while self._next_label in self._labels.values():
                    self._next_label = self._next_label % 65535 + 1
                label = self._labels[o.target_id] = self._next_label
                self._next_label = self._next_label % 65535 + 1
            if o.state == "ended":
                del self._labels[o.target_id]
            out.append(label)
        return out

    def _result_msg(self, header, size, objects: List[ObjectResult], encoded: bool, enc_ms: float, dec_ms: float,
                    track_ms: float, received_at: float, labels: Optional[List[int]] = None) -> SegmentationResult:
        msgs = [self._object_msg(o) for o in objects]
        for m, label in zip(msgs, labels or ()):
            m.label = label
        res = SegmentationResult(header=header, objects=msgs, encoded=encoded,
                                 encoder_ms=float(enc_ms), decoder_ms=float(dec_ms), tracking_ms=float(track_ms))
        res.height, res.width = size
        res.latency_ms = float((time.monotonic() - received_at) * 1000)
        return res

    def _object_msg(self, o: ObjectResult) -> ObjectMask:
        obj = ObjectMask(target_id=o.target_id, source=o.source, state=o.state, propagated=o.propagated,
                         age_frames=int(o.age_frames), age_s=float(o.age_s), chosen=-1)
        if o.prediction is not None and o.multimask and len(o.prediction.iou_predictions) > 1:
            obj.candidates = [self._candidate(o.prediction, i) for i in range(len(o.prediction.iou_predictions))]
            obj.chosen = o.chosen
            best = obj.candidates[o.chosen]
        elif o.mask is not None:
            best = self._candidate(MaskPrediction(o.mask[None], np.array([o.iou]), None, np.array([o.stability])), 0)
        else:
            return obj  # absent target: state only, no mask
        obj.bbox, obj.mask, obj.iou, obj.stability, obj.area = best.bbox, best.mask, best.iou, best.stability, best.area
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

    def _publish_overlay(self, result: FrameResult) -> None:
        drawn = [(o.target_id, o.mask, o.iou) for o in result.objects if o.mask is not None]
        # Colours by order of first appearance: distinct for the first targets, stable per id.
        keys = [self._colors.setdefault(tid, len(self._colors)) for tid, _, _ in drawn]
        image = draw_masks(result.frame.rgb, [m for _, m, _ in drawn],
                           labels=[f"{tid} {iou:.2f}" for tid, _, iou in drawn],
                           keys=keys, alpha=self.params.overlay_alpha)
        msg = conv.fill_image_msg(Image(), image, "rgb8")
        msg.header = result.frame.meta
        self.pub_overlay.publish(msg)

    def _report(self, kind: str, message: str) -> None:
        self._last_error = f"{kind}: {message}"
        self.get_logger().warning(message, throttle_duration_sec=1.0)

    def _publish_diagnostics(self) -> None:
        s = self.session.stats
        now = time.monotonic()
        self._fps_window.append((now, s.frames_received, s.frames_encoded))
        t_old, rx_old, enc_old = self._fps_window[0]
        dt = max(1e-6, now - t_old)
        fps_in = (s.frames_received - rx_old) / dt if len(self._fps_window) > 1 else 0.0
        fps_out = (s.frames_encoded - enc_old) / dt if len(self._fps_window) > 1 else 0.0
        mean = lambda v: round(float(np.mean(v)), 2) if v else 0.0  # noqa: E731
        targets = self.session.targets()
        status = DiagnosticStatus(name=f"{self.get_name()}: segmentation", hardware_id=self.params.device)
        q = self.session.prompts
        errors = s.frame_errors + s.prompt_errors
        status.level = DiagnosticStatus.WARN if self._last_error else DiagnosticStatus.OK
        if s.frames_received == 0:
            status.message = "waiting for camera frames"
        else:
            status.message = (f"{fps_out:.1f} fps encoded of {fps_in:.1f} fps in, {len(targets)} targets, "
                              f"{errors} errors")
        values = {
            "frames_received": s.frames_received, "frames_encoded": s.frames_encoded,
            "frames_dropped": s.frames_dropped, "fps_in": round(fps_in, 2), "fps_encoded": round(fps_out, 2),
            "encoder_ms": mean(s.encoder_ms), "decoder_ms": mean(s.decoder_ms), "tracking_ms": mean(s.track_ms),
            "prompts_received": q.received, "prompts_dropped": q.dropped_full + q.dropped_stale,
            "prompts_dropped_stale": q.dropped_stale, "prompt_errors": s.prompt_errors,
            "image_errors": s.frame_errors, "results_published": self._results_published,
            "active_targets": len(targets),
            "targets_by_state": ",".join(f"{t.target_id}:{t.state.value}" for t in targets),
            "targets_ended": s.targets_ended, "reacquisitions": s.reacquisitions,
            "encoder_pauses_for_prompts": self.session.preempt.pauses,
            "encoder_paused_ms": round(self.session.preempt.paused_s * 1000, 1),
            "cached_frames": len(self.session.cache), "pending_prompt_requests": len(q),
            "last_error": self._last_error,
        }
        if self.depth is not None:
            values.update(self.depth.stats())
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)



class SamNode(SamCore, Node):
    """The node: parameters, model, inputs and outputs, all at construction."""

    def __init__(self, node_name: str = "sam_ros", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._setup_parameters()
        self._load_model()
        self._open()

    def destroy_node(self) -> None:
        self._close()   # the constructor may have failed part-way (e.g. a bad checkpoint): stops what exists
        super().destroy_node()


def _msg_prompt(msg) -> Callable[[Tuple[int, int], int], Prompt]:
    """A sam_ros/Prompt message becomes a Prompt once its frame's size is known."""
    return lambda size, low_res: conv.prompt_from_msg(msg, size, low_res)


def _load_and_warm_up(*args: Any) -> Tuple[Any, float]:
    predictor = create_predictor(*args)
    return predictor, predictor.warm_up()


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
