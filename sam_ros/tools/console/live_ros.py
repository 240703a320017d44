"""The console's ROS 2 node for live mode: beside the sam_ros node, through its topics only.

Subscribes `image` (sensor-data QoS, as cameras publish) and `segmentation`; publishes `prompt`
(sam_ros/Prompt, one per target id: the same id replaces the target's prompt) and
`clear_targets` (std_msgs/String, "" = all). Converts messages to the ROS-free LiveSession's
types; ObjectMask tracking fields (`state`, `propagated`, `age_frames`) are shown when the node
sends them.

Prompts go out on volatile topics: one published before DDS has matched the sam_ros node's
subscription (the node not started yet, or discovery still running on a loaded machine) would
be lost. Until both topics have a subscriber, what the operator does is held here, in order
(a target's newer prompt replaces its held one), and sent once the node is matched; the page
shows that the node is not connected and how much is held.
"""
import threading
from typing import Any, List, Tuple

import numpy as np
import rclpy
from geometry_msgs.msg import Point
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from ...engine.image_io import ConversionError, to_rgb
from ...msg import Prompt, SegmentationResult
from ...ros.conversions import fill_image_msg, stamp_key
from ...ros.spin import spin_in_thread
from .live import LiveSession, ObjectView, PromptSpec

RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=100)
MAX_HELD = 100  # prompts and removals kept while no node listens (the oldest go first)


def _crop(mask_msg: Any) -> np.ndarray:
    h, w = int(mask_msg.height), int(mask_msg.width)
    if h == 0 or w == 0:
        return np.zeros((0, 0), bool)
    data = np.frombuffer(mask_msg.data, np.uint8)
    return data[: h * int(mask_msg.step)].reshape(h, int(mask_msg.step))[:, :w] > 0


def object_view(o: Any) -> ObjectView:
    """sam_ros/ObjectMask -> ObjectView (works with and without the tracking fields)."""
    cands = [(_crop(c.mask), (int(c.bbox.x_offset), int(c.bbox.y_offset)), float(c.iou)) for c in o.candidates]
    return ObjectView(o.target_id, _crop(o.mask), (int(o.bbox.x_offset), int(o.bbox.y_offset)), float(o.iou),
                      float(o.stability), int(o.area), o.source, str(getattr(o, "state", "") or ""),
                      bool(getattr(o, "propagated", False)), int(getattr(o, "age_frames", getattr(o, "age", 0)) or 0),
                      cands, int(o.chosen))


def prompt_msg(spec: PromptSpec) -> Prompt:
    """PromptSpec -> sam_ros/Prompt on the latest frame (zero stamp)."""
    msg = Prompt(target_id=spec.target_id, multimask=spec.multimask)
    msg.points = [Point(x=float(x), y=float(y), z=0.0) for x, y in spec.points]
    msg.labels = [int(v) for v in spec.labels]
    if spec.box is not None:
        msg.has_box = True
        msg.box = [float(v) for v in spec.box]
    if spec.mask_input is not None:
        fill_image_msg(msg.mask_input, spec.mask_input.astype(np.uint8) * np.uint8(255), "mono8")
    return msg


class ConsoleNode(Node):
    def __init__(self, session: LiveSession, image_topic: str = "image", compressed: bool = False,
                 node_name: str = "sam_ros_console", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.session = session
        self.errors = 0
        self._latest = None
        self._frame_ready = threading.Event()
        self.pub_prompt = self.create_publisher(Prompt, "prompt", RELIABLE)
        self.pub_clear = self.create_publisher(String, "clear_targets", RELIABLE)
        if compressed:
            self.create_subscription(CompressedImage, image_topic + "/compressed", self._on_image, qos_profile_sensor_data)
        else:
            self.create_subscription(Image, image_topic, self._on_image, qos_profile_sensor_data)
        self.create_subscription(SegmentationResult, "segmentation", self._on_result, RELIABLE)
        self._held: List[Tuple[str, Any]] = []
        self._held_lock = threading.Lock()
        session.publish = self.send
        self.create_timer(0.1, self._check_link)
        self._decoder = threading.Thread(target=self._decode_frames, daemon=True)
        self._decoder.start()

    def _on_image(self, msg) -> None:
        self._latest = msg  # latest frame wins: decoding happens on the decoder thread
        self._frame_ready.set()

    def _decode_frames(self) -> None:
        while rclpy.ok(context=self.context):
            if not self._frame_ready.wait(0.2):
                continue
            self._frame_ready.clear()
            msg = self._latest
            try:
                rgb = to_rgb(msg)
            except ConversionError as e:
                self.errors += 1
                self.get_logger().warning(f"camera frame skipped: {e}", throttle_duration_sec=2.0)
                continue
            self.session.on_frame(rgb, stamp_key(msg.header.stamp))

    def _on_result(self, msg) -> None:
        try:
            objects: List[ObjectView] = [object_view(o) for o in msg.objects]
        except Exception as e:  # a malformed result must not stop the console
            self.get_logger().warning(f"segmentation result skipped: {e}", throttle_duration_sec=2.0)
            return
        self.session.on_result(objects)

    def node_listening(self) -> bool:
        """Whether a subscriber (the sam_ros node) is matched on both topics the console sends on."""
        return self.pub_prompt.get_subscription_count() > 0 and self.pub_clear.get_subscription_count() > 0

    def send(self, kind: str, payload: Any) -> None:
        with self._held_lock:
            if self._held or not self.node_listening():
                self._hold(kind, payload)
                held = len(self._held)
            else:
                held = -1
        if held >= 0:
            self.session.set_link(False, held)
        else:
            self._publish(kind, payload)

    def _hold(self, kind: str, payload: Any) -> None:
        if kind == "prompt":  # a target's newer prompt replaces the held one
            self._held = [(k, p) for k, p in self._held if not (k == "prompt" and p.target_id == payload.target_id)]
        elif kind == "clear":  # prompts of removed targets need not go out at all
            self._held = [(k, p) for k, p in self._held if not (k == "prompt" and (not payload or p.target_id == payload))]
        self._held.append((kind, payload))
        del self._held[:-MAX_HELD]

    def _publish(self, kind: str, payload: Any) -> None:
        if kind == "prompt":
            self.pub_prompt.publish(prompt_msg(payload))
        elif kind == "clear":
            self.pub_clear.publish(String(data=payload))

    def _check_link(self) -> None:
        """Timer: send what was held once the node is matched; tell the page when the link changes."""
        listening = self.node_listening()
        with self._held_lock:
            held, self._held = (self._held, []) if listening else ([], self._held)
            for kind, payload in held:
                self._publish(kind, payload)
            count = len(self._held)
        if held:
            self.get_logger().info(f"sam_ros node matched: sent {len(held)} held prompt(s)")
        self.session.set_link(listening, count)


def start(session: LiveSession, args=None, image_topic: str = "image", compressed: bool = False):
    """rclpy + the console node spinning on a thread of its own; returns (node, stop function)."""
    context = rclpy.Context()
    rclpy.init(args=args, context=context)
    node = ConsoleNode(session, image_topic, compressed, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    stop_spinning = spin_in_thread(executor, context)

    def stop() -> None:
        stop_spinning()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)

    return node, stop
