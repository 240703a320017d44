"""The sam_ros node end to end: a real node process, real rclpy and Fast DDS, sensor-data QoS.

The test process plays camera, operator and detector; it checks what actually arrives.
"""
import collections
import math
import os
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from sam_ros.data.scenes import SceneSequence  # noqa: E402
from sam_ros.data.tracking_scenes import TrackingSequence  # noqa: E402
from sam_ros.engine.factory import default_weights  # noqa: E402
from sam_ros.engine.mask_utils import farthest_from_boundary  # noqa: E402
from sam_ros.msg import Prompt, PromptArray, SegmentationResult  # noqa: E402
from sam_ros.ros.conversions import fill_image_msg, stamp_key  # noqa: E402

from ros_helpers import NodeProcess, spin_until  # noqa: E402

pytestmark = pytest.mark.ros

DOMAIN = 40 + os.getpid() % 150
AUTO_IOU, AUTO_STAB = 0.5, 0.6


class Client:
    """Camera + operator + detector + observer in the test process."""

    def __init__(self, context, node_name: str = "sam_ros", image_topic: str = "image") -> None:
        self.node = rclpy.create_node(f"tester_{node_name}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        n = self.node
        self.image_pub = n.create_publisher(Image, image_topic, qos_profile_sensor_data)
        self.jpeg_pub = n.create_publisher(CompressedImage, image_topic + "/compressed", qos_profile_sensor_data)
        self.prompt_pub = n.create_publisher(Prompt, "prompt", 100)
        self.prompts_pub = n.create_publisher(PromptArray, "prompts", 100)
        self.click_pub = n.create_publisher(Point, f"/{image_topic}_mouse_left", 10)
        self.clear_pub = n.create_publisher(String, "clear_targets", 10)
        self.clear_cli = n.create_client(Trigger, f"/{node_name}/clear_targets")
        self.results = []
        self.overlays = []
        self.diag = {}
        n.create_subscription(SegmentationResult, "segmentation", lambda m: self.results.append((time.monotonic(), m)), 100)
        n.create_subscription(Image, "segmentation/overlay", lambda m: self.overlays.append(m), qos_profile_sensor_data)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.sec = 1000
        self.sent = {}

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.startswith(self.node.get_name().replace("tester_", "") + ":"):
                self.diag = {kv.key: kv.value for kv in s.values}

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def wait(self, predicate, timeout: float = 20.0) -> bool:
        return spin_until(self.executor, predicate, timeout)

    def next_header(self, frame_id: str = "camera"):
        from std_msgs.msg import Header

        self.sec += 1
        h = Header(frame_id=frame_id)
        h.stamp.sec, h.stamp.nanosec = self.sec, 123
        return h

    def publish_image(self, rgb: np.ndarray, encoding: str = "rgb8", header=None):
        header = header or self.next_header()
        if encoding == "bgr8":
            data = rgb[..., ::-1]
        elif encoding == "rgba8":
            data = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        elif encoding == "bgra8":
            data = np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])
        elif encoding == "mono8":
            data = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        else:
            data = rgb
        msg = fill_image_msg(Image(), data, encoding)
        msg.header = header
        self.image_pub.publish(msg)
        self.sent[stamp_key(header.stamp)] = rgb
        return header

    def publish_raw(self, msg) -> None:
        msg.header = self.next_header()
        self.image_pub.publish(msg)

    def diag_int(self, key: str) -> int:
        return int(self.diag.get(key, "0"))

    def results_for(self, target_id: str):
        return [m for _, m in self.results if any(o.target_id == target_id for o in m.objects)]

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()


def point_prompt(header, x, y, target_id="", multimask=True, label=1) -> Prompt:
    p = Prompt(header=header, target_id=target_id, multimask=multimask)
    p.points = [Point(x=float(x), y=float(y), z=0.0)]
    p.labels = [label]
    return p


def box_prompt(header, box, target_id="") -> Prompt:
    p = Prompt(header=header, target_id=target_id, has_box=True, multimask=False)
    p.box = [float(v) for v in box]
    return p


def full_mask(obj, height, width) -> np.ndarray:
    out = np.zeros((height, width), bool)
    if obj.area:
        crop = np.frombuffer(obj.mask.data, np.uint8).reshape(obj.mask.height, obj.mask.width) > 0
        out[obj.bbox.y_offset:obj.bbox.y_offset + crop.shape[0], obj.bbox.x_offset:obj.bbox.x_offset + crop.shape[1]] = crop
    return out


@pytest.fixture(scope="module")
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture(scope="module")
def node(context):
    proc = NodeProcess(DOMAIN, params={"cache_size": 3, "prompt_wait_s": 2.0, "max_pending_prompts": 64,
                                       # thresholds for the shipped tiny model (see its model card); SAM's
                                       # 0.88 / 0.95 suit official checkpoints
                                       "auto_pred_iou_thresh": AUTO_IOU, "auto_stability_thresh": AUTO_STAB})
    assert proc.wait_for_log("listening on", 90), proc.log
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(context, node):
    c = Client(context)
    # Discovery: wait until the node's subscriptions match our publishers.
    assert c.wait(lambda: c.image_pub.get_subscription_count() > 0 and c.prompt_pub.get_subscription_count() > 0
                  and c.prompts_pub.get_subscription_count() > 0, 30), node.log
    yield c
    c.close()


def _stream(client, seq, start, count, rate=8.0):
    headers = []
    for t in range(start, start + count):
        headers.append(client.publish_image(seq.frame(t).image))
        client.spin(1.0 / rate)
    return headers


def test_click_target_is_segmented_on_every_later_frame(client, node):
    seq = SceneSequence(11, height=480, width=640)
    _stream(client, seq, 0, 3)
    assert client.wait(lambda: client.diag_int("frames_encoded") >= 2, 30), node.log
    scene = seq.frame(2)
    wholes = [i for i in range(len(scene.masks)) if scene.level[i] == 0]
    target = max(wholes, key=lambda i: scene.masks[i].sum())
    (x, y), _ = farthest_from_boundary(scene.masks[target])
    assert client.wait(lambda: client.click_pub.get_subscription_count() > 0, 10)
    client.click_pub.publish(Point(x=float(x), y=float(y), z=0.0))
    assert client.wait(lambda: client.results_for("click_1"), 20), node.log
    first = client.results_for("click_1")[0]
    obj = first.objects[0]
    assert obj.source == "click" and len(obj.candidates) == 3 and 0 <= obj.chosen < 3
    assert obj.iou == pytest.approx(obj.candidates[obj.chosen].iou)

    n_before = len(client.results_for("click_1"))
    headers = _stream(client, seq, 3, 12, rate=5.0)
    assert client.wait(lambda: len(client.results_for("click_1")) >= n_before + len(headers), 30), \
        (client.diag, node.log[-2000:])
    tracked = [m for m in client.results_for("click_1")[n_before:]]
    sent_keys = {stamp_key(h.stamp): h for h in headers}
    got_keys = [stamp_key(m.header.stamp) for m in tracked]
    # Every frame published after the click (none dropped at 5 Hz) got a result for the target.
    assert set(sent_keys) <= set(got_keys)
    ious = []
    for m in tracked:
        h = sent_keys[stamp_key(m.header.stamp)]
        assert m.header.frame_id == h.frame_id == "camera"
        assert (m.height, m.width) == (480, 640)
        o = m.objects[0]
        assert o.source == "click" and o.state in ("tracking", "reacquired") and o.chosen == -1
        assert math.isfinite(o.iou) and 0.0 <= o.stability <= 1.0
        assert o.area == int((np.frombuffer(o.mask.data, np.uint8) > 0).sum())
        assert o.bbox.x_offset + o.bbox.width <= 640 and o.bbox.y_offset + o.bbox.height <= 480
        t = 3 + headers.index(h)
        gt = seq.frame(t)
        seg = np.flatnonzero(gt.segment_id == scene.segment_id[target])
        if seg.size:
            mask = full_mask(o, 480, 640)
            ious.append((mask & gt.masks[seg[0]]).sum() / max(1, (mask | gt.masks[seg[0]]).sum()))
    # Overlays carry the source frame's header too.
    assert client.wait(lambda: any(stamp_key(o.header.stamp) in sent_keys for o in client.overlays), 10)
    if default_weights() is not None:
        assert np.mean(ious) > 0.6, ious


def test_prompt_array_of_boxes_decodes_on_the_named_frame(client, node):
    seq = SceneSequence(5, height=480, width=640)
    headers = _stream(client, seq, 0, 3)
    assert client.wait(lambda: client.diag_int("frames_encoded") >= 5, 30)
    h = headers[1]
    scene = seq.frame(1)
    boxes = []
    for i in range(len(scene.masks)):
        if scene.level[i] == 0 and len(boxes) < 3:
            ys, xs = np.nonzero(scene.masks[i])
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    msg = PromptArray(header=h, prompts=[box_prompt(h, b) for b in boxes])
    n = len(client.results)
    client.prompts_pub.publish(msg)
    assert client.wait(lambda: any(len(m.objects) == len(boxes) and m.objects[0].source == "prompt"
                                   for _, m in client.results[n:]), 20), node.log
    res = next(m for _, m in client.results[n:] if len(m.objects) == len(boxes))
    assert stamp_key(res.header.stamp) == stamp_key(h.stamp) and res.header.frame_id == h.frame_id
    assert res.encoder_ms == 0.0 and res.decoder_ms > 0
    assert all(o.chosen == -1 and o.area > 0 for o in res.objects)


def test_detection2d_array_boxes_become_masks_and_targets(client, node):
    """A detector's vision_msgs/Detection2DArray (built for the tests from tests/interfaces, as
    vision_msgs is not on PyPI): one decoder call for all boxes, one result on the named frame,
    masks that match the objects; a detection with an id becomes a tracked target."""
    vision_msgs = pytest.importorskip("vision_msgs.msg", reason="test vision_msgs not built (scripts/test.sh builds it)")
    assert "Detection2DArray input disabled" not in node.log
    det_pub = client.node.create_publisher(vision_msgs.Detection2DArray, "detections", 10)
    assert client.wait(lambda: det_pub.get_subscription_count() > 0, 10), node.log
    client.clear_pub.publish(String(data=""))
    seq = SceneSequence(17, height=480, width=640)
    headers = _stream(client, seq, 0, 3)
    assert client.wait(lambda: client.diag_int("frames_encoded") >= 2, 30)
    h = headers[1]
    scene = seq.frame(1)
    wholes = sorted((i for i in range(len(scene.masks)) if scene.level[i] == 0),
                    key=lambda i: -scene.masks[i].sum())[:3]
    assert len(wholes) >= 2
    msg = vision_msgs.Detection2DArray(header=h)
    for k, i in enumerate(wholes):
        ys, xs = np.nonzero(scene.masks[i])
        d = vision_msgs.Detection2D(header=h, id="det_0" if k == 0 else "")
        d.bbox.center.position.x = (xs.min() + xs.max() + 1) / 2.0
        d.bbox.center.position.y = (ys.min() + ys.max() + 1) / 2.0
        d.bbox.size_x, d.bbox.size_y = float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())
        msg.detections.append(d)
    n = len(client.results)
    det_pub.publish(msg)
    assert client.wait(lambda: any(m.objects and m.objects[0].source == "detection" for _, m in client.results[n:]),
                       20), node.log[-2000:]
    res = next(m for _, m in client.results[n:] if m.objects and m.objects[0].source == "detection")
    assert stamp_key(res.header.stamp) == stamp_key(h.stamp)
    assert [o.target_id for o in res.objects] == ["det_0"] + [""] * (len(wholes) - 1)
    ious = []
    for o, i in zip(res.objects, wholes):
        mask = full_mask(o, 480, 640)
        ious.append((mask & scene.masks[i]).sum() / max(1, (mask | scene.masks[i]).sum()))
    if default_weights() is not None:
        assert np.mean(ious) > 0.6, ious
    # The detection with an id is tracked on the next frames.
    later = _stream(client, seq, 3, 2)
    assert client.wait(lambda: {stamp_key(x.stamp) for x in later} <= {stamp_key(m.header.stamp)
                                                                     for m in client.results_for("det_0")}, 20)
    client.clear_pub.publish(String(data=""))
    client.node.destroy_publisher(det_pub)


def _bad_image(kind: str) -> Image:
    m = Image(height=48, width=64, encoding="rgb8", step=64 * 3)
    m.data = bytes(48 * 64 * 3)
    if kind == "step":
        m.step = 10
    elif kind == "short":
        m.data = bytes(100)
    elif kind == "encoding":
        m.encoding = "foo8"
    elif kind == "empty":
        m.height = m.width = 0
        m.data = b""
    return m


def _decode_one(client, header) -> bool:
    """Ask for one mask on `header`'s frame and wait for it."""
    n = len(client.results)
    client.prompt_pub.publish(point_prompt(header, 100, 100, multimask=False))
    return client.wait(lambda: any(stamp_key(m.header.stamp) == stamp_key(header.stamp) for _, m in client.results[n:]), 15)


@pytest.mark.parametrize("kind", ["step", "short", "encoding", "empty"])
def test_malformed_images_are_reported_and_node_keeps_serving(client, node, kind):
    client.clear_pub.publish(String(data=""))
    before = client.diag_int("image_errors")
    client.publish_raw(_bad_image(kind))
    assert client.wait(lambda: client.diag_int("image_errors") > before, 15), node.log
    assert node.proc.poll() is None
    h = client.publish_image(SceneSequence(3).frame(0).image)
    assert _decode_one(client, h), node.log


@pytest.mark.parametrize("case", ["outside", "nan", "box_inverted", "stale_frame"])
def test_bad_prompts_are_reported_and_node_keeps_serving(client, node, case):
    seq = SceneSequence(9, height=480, width=640)
    headers = _stream(client, seq, 0, 5, rate=4.0)
    before = client.diag_int("prompt_errors")
    h = headers[-1]
    if case == "outside":
        bad = point_prompt(h, 5000, 10)
    elif case == "nan":
        bad = point_prompt(h, float("nan"), 10)
    elif case == "box_inverted":
        bad = box_prompt(h, (300, 100, 200, 200))
    else:
        bad = point_prompt(headers[0], 100, 100)  # cache holds 3 frames: frame 0 is gone
    client.prompt_pub.publish(bad)
    assert client.wait(lambda: client.diag_int("prompt_errors") > before, 15), node.log
    assert node.proc.poll() is None
    assert _decode_one(client, h), node.log


def test_prompt_burst_is_bounded_and_node_keeps_serving(client, node):
    """2000 prompts at once: the node bounds its queue (drops and counts the excess) and keeps
    serving the camera and new prompts while the burst is still arriving."""
    seq = SceneSequence(4, height=480, width=640)
    headers = _stream(client, seq, 0, 2)
    assert client.wait(lambda: client.diag_int("frames_encoded") > 0, 20)
    encoded_before = client.diag_int("frames_encoded")
    burst_pub = client.node.create_publisher(Prompt, "prompt", 3000)
    assert client.wait(lambda: burst_pub.get_subscription_count() > 0, 10)
    for i in range(2000):
        burst_pub.publish(point_prompt(headers[-1], 10 + i % 600, 20 + i % 400, multimask=False))
    # Other inputs are still served during the burst: a new frame is encoded and a prompt for it
    # (on the array topic) gets its result.
    h = client.publish_image(seq.frame(5).image)
    n = len(client.results)
    client.prompts_pub.publish(PromptArray(header=h, prompts=[point_prompt(h, 320, 240, multimask=False)]))
    assert client.wait(lambda: any(stamp_key(m.header.stamp) == stamp_key(h.stamp) for _, m in client.results[n:]), 30), \
        (client.diag, node.log[-2000:])
    assert client.diag_int("frames_encoded") > encoded_before
    # That frame's encoder pass yielded to the burst's decoding (prompt priority), within its
    # per-frame pause budget (0.25 s): the frame above was still encoded.
    assert client.wait(lambda: client.diag_int("encoder_pauses_for_prompts") > 0, 10), client.diag
    assert client.wait(lambda: client.diag_int("prompts_dropped") > 0, 30), client.diag
    assert node.proc.poll() is None
    # One PromptArray with 500 objects: decoded in bounded chunks, published as one result.
    n = len(client.results)
    big = PromptArray(header=h, prompts=[point_prompt(h, 5 + i % 630, 5 + (7 * i) % 470, multimask=False)
                                         for i in range(500)])
    client.prompts_pub.publish(big)
    assert client.wait(lambda: any(len(m.objects) == 500 for _, m in client.results[n:]), 120), node.log[-2000:]
    assert node.proc.poll() is None
    # The backlog drains (bounded work): nothing pending and nothing more arriving.
    seen = []

    def drained():
        now = time.monotonic()
        seen.append((now, client.diag_int("prompts_received"), client.diag_int("pending_prompt_requests")))
        old = [r for t, r, _ in seen if t < now - 3.0]
        return bool(old) and seen[-1][2] == 0 and old[-1] == seen[-1][1]

    assert client.wait(drained, 180), (seen[-1], client.diag)



def test_tracked_target_through_a_full_occlusion_and_a_prompt_flood(client, node):
    """A box target on a 30 Hz-stamped camera (published at 10 Hz): a result for every frame
    with the same id, no mask while a pillar hides it (reported occluded or lost), re-acquired
    after, and a flood of one-shot prompts in the middle does not starve it."""
    from std_msgs.msg import Header

    seq = TrackingSequence("occlusion", 7000, 480, 640, num_frames=130)
    t0 = seq.first_visible()
    base = client.sec + 1          # stamps keep increasing across the module's tests
    client.sec = base + seq.num_frames // 30 + 2

    def header(t):
        h = Header(frame_id="camera")
        h.stamp.sec, h.stamp.nanosec = base + t // 30, int((t % 30) / 30 * 1e9)
        return h

    first = seq.frame(t0)
    h0 = client.publish_image(first.image, header=header(t0))
    assert client.wait(lambda: client.diag_int("frames_encoded") > 0, 30), node.log
    x, y, w, bh = cv2.boundingRect(seq.target_mask(first).view(np.uint8))
    client.prompt_pub.publish(box_prompt(h0, [x, y, x + w, y + bh], target_id="occ"))
    assert client.wait(lambda: client.results_for("occ"), 30), node.log[-2000:]
    burst_pub = client.node.create_publisher(Prompt, "prompt", 1000)
    assert client.wait(lambda: burst_pub.get_subscription_count() > 0, 10)
    sent = {}
    flood_at = t0 + 25
    for t in range(t0 + 1, seq.num_frames):
        scene = seq.frame(t)
        h = client.publish_image(scene.image, header=header(t))
        sent[stamp_key(h.stamp)] = (t, seq.target_mask(scene))
        if t == flood_at:
            for i in range(500):
                burst_pub.publish(point_prompt(h, 10 + i % 600, 20 + i % 400, multimask=False))
        client.spin(0.1)

    def got():
        return {stamp_key(m.header.stamp): next(o for o in m.objects if o.target_id == "occ")
                for m in client.results_for("occ") if stamp_key(m.header.stamp) in sent}

    assert client.wait(lambda: len(got()) >= len(sent), 60), (len(got()), len(sent), client.diag, node.log[-2000:])
    assert node.proc.poll() is None
    frames = sorted((sent[k][0], sent[k][1], o) for k, o in got().items())
    hidden = [i for i, (_, gt, _) in enumerate(frames) if gt is None]
    assert hidden, "the scenario hides the target"
    states = [o.state for _, _, o in frames]
    assert sum(frames[i][2].area > 0 for i in hidden) <= 2, [frames[i][2].area for i in hidden]
    assert {"occluded"} <= set(states[hidden[0]:hidden[-1] + 1]) <= {"occluded", "lost", "tracking", "reacquired"}
    after = hidden[-1] + 1
    assert "reacquired" in states[after:], states[after:]
    back = states.index("reacquired", after)
    assert back - after <= 30, states[after:]
    ious = [(full_mask(o, 480, 640) & gt).sum() / max(1, (full_mask(o, 480, 640) | gt).sum())
            for _, gt, o in frames[back + 3:] if gt is not None and o.area > 0]
    assert ious and np.mean(ious) > 0.5, ious
    # Before the occlusion, through the flood: tracked on every frame with a mask.
    assert all(o.area > 0 and o.state in ("tracking", "reacquired") for t, gt, o in frames[:hidden[0] - 3]
               if gt is not None and gt.sum() > 0.5 * seq.target_mask(first).sum())
    assert client.diag_int("prompts_dropped") > 0


def test_camera_restart_with_another_resolution(client, node):
    client.clear_pub.publish(String(data=""))
    small = SceneSequence(2, height=480, width=640)
    h = client.publish_image(small.frame(0).image)
    assert _decode_one(client, h)
    big = SceneSequence(2, height=720, width=1280)
    h2 = client.publish_image(big.frame(0).image)
    assert client.wait(lambda: _decode_one(client, h2), 30), node.log
    res = [m for _, m in client.results if stamp_key(m.header.stamp) == stamp_key(h2.stamp)][-1]
    assert (res.height, res.width) == (720, 1280)
    assert "resolution changed" in node.log


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8"])
def test_image_encodings(client, node, encoding):
    h = client.publish_image(SceneSequence(6).frame(0).image, encoding=encoding)
    assert _decode_one(client, h), node.log


def test_clear_targets_by_topic_and_service(client, node):
    seq = SceneSequence(12, height=480, width=640)
    headers = _stream(client, seq, 0, 2)
    client.prompt_pub.publish(point_prompt(headers[-1], 320, 240, target_id="keep_me"))
    assert client.wait(lambda: client.results_for("keep_me"), 20)
    client.clear_pub.publish(String(data="keep_me"))
    client.spin(1.0)
    n = len(client.results_for("keep_me"))
    later = _stream(client, seq, 2, 3)
    client.spin(1.0)
    after = client.results_for("keep_me")[n:]
    # Cleared: reported once as ended (at most one frame after the clear), then no more results.
    ended = [m for m in client.results_for("keep_me") if m.objects[0].state == "ended"]
    assert len(ended) == 1 and ended[0].objects[0].area == 0
    assert all(m.objects[0].state == "ended" for m in after)
    client.prompt_pub.publish(point_prompt(later[-1], 320, 240, target_id="again"))
    assert client.wait(lambda: client.results_for("again"), 20)
    assert client.clear_cli.wait_for_service(timeout_sec=10)
    fut = client.clear_cli.call_async(Trigger.Request())
    assert client.wait(lambda: fut.done(), 10)
    assert fut.result().success and "1" in fut.result().message


def test_latest_frame_wins_under_a_fast_camera(client, node):
    """A camera far faster than the encoder: frames are dropped and counted, latency stays flat,
    and memory does not grow over a few thousand frames."""
    client.clear_pub.publish(String(data=""))
    seq = SceneSequence(21, height=480, width=640)
    # Back and forth through 8 frames: the objects move continuously (a loop's jump back would
    # be a leap of 7 frames' motion at every turn, which the tracker may rightly not follow).
    frames = [seq.frame(t).image for t in list(range(8)) + list(range(6, 0, -1))]
    h = client.publish_image(frames[0])
    client.prompt_pub.publish(point_prompt(h, 320, 240, target_id="fast"))
    assert client.wait(lambda: client.results_for("fast"), 20), node.log[-2000:]
    dropped0 = client.diag_int("frames_dropped")
    published0 = client.diag_int("results_published")
    rss = []
    n_results0 = len(client.results_for("fast"))
    total = 2500
    t0 = time.monotonic()
    for i in range(total):
        client.publish_image(frames[i % len(frames)])
        client.executor.spin_once(timeout_sec=0.0)
        time.sleep(0.004)
        if i in (300, total - 1):
            rss.append(node.rss_mb())
    rate = total / (time.monotonic() - t0)
    client.spin(2.0)
    lat = [m.latency_ms for m in client.results_for("fast")[n_results0:]]
    assert rate > 60, f"camera only reached {rate:.0f} Hz"
    # Latest frame wins for the encoder; the tracking thread drops what it cannot keep up with.
    assert client.diag_int("frames_encoded") < client.diag_int("frames_received") // 4, client.diag
    # A tracking thread that cannot keep up drops frames (counted); one that can (a fast CPU: 88-143
    # Hz kept up with on an AMD EPYC) publishes a result for nearly every frame (the node's count:
    # this client's own queue loses results at that rate). Either way no backlog (below).
    published = client.diag_int("results_published") - published0
    states = collections.Counter(m.objects[0].state for m in client.results_for("fast")[n_results0:])
    assert client.diag_int("frames_dropped") > dropped0 or published >= 0.9 * total, (published, states, client.diag)
    assert states["tracking"] >= 0.9 * sum(states.values()), states   # held on its object throughout
    assert len(lat) > 20
    early, late = np.median(lat[5:25]), np.median(lat[-20:])
    # No queue builds up behind the encoder: a backlog of frames at this camera rate (well over
    # twice what the node encodes) would add seconds over the 2 500 frames; a niced CI run on 2 busy
    # cores measured 17 ms early and 198 ms late without one, so the margin is half a second.
    assert late < 2 * early + 500, (early, late)
    assert rss[1] - rss[0] < 60, rss  # MB


def test_compressed_transport_and_corrupt_jpeg():
    # Its own DDS domain, so the module's node does not see (and answer) these prompts.
    domain = DOMAIN + 2
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    # (prompt_wait_s: this test is about the transport; on a loaded CI machine the first frame's
    # encode took more than the default second and its prompt was dropped.)
    proc = NodeProcess(domain, params={"image_transport": "compressed", "image_topic": "cam2", "prompt_wait_s": 5.0},
                       name="sam_jpeg")
    try:
        assert proc.wait_for_log("listening on", 90), proc.log
        c = Client(context, node_name="sam_jpeg", image_topic="cam2")
        assert c.wait(lambda: c.jpeg_pub.get_subscription_count() > 0, 30)
        rgb = SceneSequence(8).frame(0).image
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        msg = CompressedImage(format="jpeg", header=c.next_header())
        msg.data = jpg.tobytes()
        c.jpeg_pub.publish(msg)
        assert _decode_one(c, msg.header), proc.log
        bad = CompressedImage(format="jpeg", header=c.next_header())
        bad.data = jpg.tobytes()[: len(jpg) // 3] + b"garbage"
        before = c.diag_int("image_errors")
        c.jpeg_pub.publish(bad)
        assert c.wait(lambda: c.diag_int("image_errors") > before, 15), proc.log
        assert "decode" in proc.log
        msg.header = c.next_header()
        c.jpeg_pub.publish(msg)
        assert _decode_one(c, msg.header), proc.log
        c.close()
    finally:
        proc.stop()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("priority", [True, False])
def test_prompt_before_its_frame_and_both_thread_layouts(priority):
    """Both layouts: one model thread (prompt_priority, CPU default) and a prompt thread beside
    the encoder thread (what CUDA and compiled/exported encoders use). A prompt for a frame still
    on its way waits for it; its target is segmented on every later frame."""
    domain = DOMAIN + 3 + int(priority)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    proc = NodeProcess(domain, params={"prompt_priority": priority}, name="sam_threads")
    try:
        assert proc.wait_for_log("listening on", 90), proc.log
        c = Client(context, node_name="sam_threads")
        assert c.wait(lambda: c.image_pub.get_subscription_count() > 0 and c.prompt_pub.get_subscription_count() > 0,
                      30), proc.log
        seq = SceneSequence(12, height=480, width=640)
        h = c.next_header()
        # The prompt first, then its frame.
        c.prompt_pub.publish(point_prompt(h, 320, 240, target_id="t"))
        c.spin(0.2)
        c.publish_image(seq.frame(0).image, header=h)
        assert c.wait(lambda: any(stamp_key(m.header.stamp) == stamp_key(h.stamp) for m in c.results_for("t")), 20), \
            proc.log[-2000:]
        later = _stream(c, seq, 1, 4, rate=4.0)
        assert c.wait(lambda: {stamp_key(x.stamp) for x in later} <= {stamp_key(m.header.stamp)
                                                                     for m in c.results_for("t")}, 20), c.diag
        assert c.wait(lambda: "encoder_pauses_for_prompts" in c.diag, 5), c.diag
        if not priority:
            assert c.diag_int("encoder_pauses_for_prompts") == 0  # no prompt work inside the encoder
        c.close()
    finally:
        proc.stop()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("content", ["missing", "garbage"])
def test_bad_checkpoint_fails_at_startup_naming_the_file(tmp_path, content):
    path = tmp_path / "sam_vit_b.pth"
    if content == "garbage":
        path.write_bytes(os.urandom(4096))
    proc = NodeProcess(DOMAIN + 1, params={"checkpoint": str(path)}, name="sam_bad")
    try:
        proc.proc.wait(timeout=60)
    finally:
        proc.stop()
    proc._reader.join(timeout=5)
    assert proc.proc.returncode == 2
    assert str(path) in proc.log
    assert ("not found" if content == "missing" else "cannot read checkpoint") in proc.log


def test_segment_everything_service_publishes_automatic_masks(client, node):
    seq = SceneSequence(13, height=480, width=640)
    headers = _stream(client, seq, 0, 2)
    assert client.wait(lambda: client.diag_int("frames_encoded") > 0, 20)
    cli = client.node.create_client(Trigger, "/sam_ros/segment_everything")
    assert cli.wait_for_service(timeout_sec=10)
    n = len(client.results)
    fut = cli.call_async(Trigger.Request())
    assert client.wait(lambda: fut.done(), 10) and fut.result().success
    assert client.wait(lambda: any(m.objects and m.objects[0].source == "auto" for _, m in client.results[n:]), 60), \
        node.log[-2000:]
    res = next(m for _, m in client.results[n:] if m.objects and m.objects[0].source == "auto")
    assert stamp_key(res.header.stamp) in [stamp_key(h.stamp) for h in headers]
    ids = [o.target_id for o in res.objects]
    assert len(set(ids)) == len(ids) and all(i.startswith("auto/") for i in ids)
    areas = [o.area for o in res.objects]
    assert areas == sorted(areas, reverse=True) and all(a > 0 for a in areas)
    assert all(o.iou > AUTO_IOU and o.stability >= AUTO_STAB for o in res.objects)  # the configured filters
