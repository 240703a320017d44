"""The node's standard outputs and its runtime parameters, across processes through real DDS.

- `segmentation/labels`: a mono16 instance-label image per target result, with the source frame's
  header, one value per target (`ObjectMask.label`), 0 = background;
- `segmentation/detections`: vision_msgs/Detection2DArray of the targets (the tests' vision_msgs
  build, tests/interfaces);
- parameters set at run time through the standard parameter services (rclpy's parameter client).
- with `depth_topic`: the targets in 3D from an aligned depth image (procedural RGB-D scenes with
  exact geometry), and every kind of missing or bad depth reported while colour results flow.
"""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import Point  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from sam_ros.data.scenes import SceneSequence  # noqa: E402
from sam_ros.data import depth_scenes  # noqa: E402
from sam_ros.msg import Object3DArray, PromptArray  # noqa: E402
from sam_ros.ros.conversions import fill_image_msg, stamp_key  # noqa: E402

from ros_helpers import NodeProcess  # noqa: E402
# The node tests' client, prompts, frames and domain (run one module after the other, never together).
from test_ros_node import DOMAIN, Client, _stream, box_prompt, context, full_mask  # noqa: E402,F401

pytestmark = pytest.mark.ros

@pytest.fixture(scope="module")
def node(context):
    # Depth on: until test_targets_in_3d_from_aligned_depth sends some, depth never arrives (and
    # colour results must flow all the same).
    proc = NodeProcess(DOMAIN, params={"cache_size": 3, "prompt_wait_s": 5.0, "depth_topic": "camera/depth/image"})
    assert proc.wait_for_log("listening on", 90), proc.log
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(context, node):
    c = Client(context)
    c.labels = []
    c.node.create_subscription(Image, "segmentation/labels", c.labels.append, 10)
    assert c.wait(lambda: c.image_pub.get_subscription_count() > 0 and c.prompts_pub.get_subscription_count() > 0,
                  30), node.log
    yield c
    c.close()


def _start_targets(client, node, seq, ids):
    """Frames 0-2, then box prompts with target ids on frame 2 (its largest whole objects): the
    newest frame is always encoded (an older one may be skipped: latest frame wins)."""
    headers = _stream(client, seq, 0, 3)
    assert client.wait(lambda: client.diag_int("frames_encoded") >= 1, 30), node.log
    scene = seq.frame(2)
    wholes = sorted((i for i in range(len(scene.masks)) if scene.level[i] == 0), key=lambda i: -scene.masks[i].sum())
    boxes = []
    for i in wholes[:len(ids)]:
        ys, xs = np.nonzero(scene.masks[i])
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    client.prompts_pub.publish(PromptArray(header=headers[-1], prompts=[box_prompt(headers[-1], b, tid)
                                                                         for b, tid in zip(boxes, ids)]))
    assert client.wait(lambda: all(client.results_for(t) for t in ids), 20), node.log


def test_label_image_and_detections_of_the_targets(client, node):
    vision_msgs = pytest.importorskip("vision_msgs.msg", reason="test vision_msgs not built (scripts/test.sh does)")
    detections = []
    client.node.create_subscription(vision_msgs.Detection2DArray, "segmentation/detections", detections.append, 10)
    assert client.wait(lambda: client.node.count_publishers("segmentation/detections") > 0, 10), node.log
    seq = SceneSequence(23, height=240, width=320)
    ids = ["cup", "box"]
    _start_targets(client, node, seq, ids)
    headers = _stream(client, seq, 3, 5)
    keys = {stamp_key(h.stamp) for h in headers}
    done = lambda: keys <= ({stamp_key(m.header.stamp) for m in client.labels}  # noqa: E731
                            & {stamp_key(m.header.stamp) for m in detections})
    assert client.wait(done, 20), (len(client.labels), len(detections), node.log[-2000:])
    results = {stamp_key(m.header.stamp): m for m in client.results_for(ids[0]) if stamp_key(m.header.stamp) in keys}
    assert set(results) == keys
    labels_of = {}
    painted = 0
    for h in headers:
        key = stamp_key(h.stamp)
        res = results[key]
        lab = next(m for m in client.labels if stamp_key(m.header.stamp) == key)
        assert lab.encoding == "mono16" and (lab.height, lab.width) == (240, 320) and lab.header.frame_id == "camera"
        image = np.frombuffer(bytes(lab.data), np.uint16).reshape(240, 320)
        # The image is the result's masks painted with their labels (later targets over earlier).
        expected = np.zeros((240, 320), np.uint16)
        for o in res.objects:
            labels_of.setdefault(o.target_id, o.label)
            assert o.label == labels_of[o.target_id] and o.label > 0   # fixed for the target's life
            if o.area:
                expected[full_mask(o, 240, 320)] = o.label
        assert np.array_equal(image, expected)
        painted += int(np.count_nonzero(image))
        # Detections: the targets with a mask, box = the mask's box, score = predicted IoU.
        det = next(m for m in detections if stamp_key(m.header.stamp) == key)
        shown = [o for o in res.objects if o.area]
        assert [d.id for d in det.detections] == [o.target_id for o in shown]
        for d, o in zip(det.detections, shown):
            assert d.bbox.size_x == o.bbox.width and d.bbox.size_y == o.bbox.height
            assert d.bbox.center.position.x == pytest.approx(o.bbox.x_offset + o.bbox.width / 2)
            assert d.bbox.center.position.y == pytest.approx(o.bbox.y_offset + o.bbox.height / 2)
            assert d.results[0].hypothesis.class_id == "prompt"
            assert d.results[0].hypothesis.score == pytest.approx(o.iou, abs=1e-6)
            assert stamp_key(d.header.stamp) == key
    assert sorted(labels_of) == sorted(ids) and len(set(labels_of.values())) == len(ids)
    assert painted > 0
    client.clear_pub.publish(String(data=""))


def _set(client, pc, **values):
    """SetParametersAtomically: the whole request is accepted or none of it."""
    fut = pc.set_parameters_atomically([Parameter(k, value=v) for k, v in values.items()])
    assert client.wait(fut.done, 10)
    return [fut.result().result]


def _get(client, pc, *names):
    fut = pc.get_parameters(list(names))
    assert client.wait(fut.done, 10)
    values = [Parameter.from_parameter_msg(ParameterMsg(name=n, value=v)).value
              for n, v in zip(names, fut.result().values)]
    return [v if isinstance(v, (str, bool, int, float)) else list(v) for v in values]


def _stream_until(client, seq, start, predicate, timeout=30.0, rate=4.0):
    """Publish frames start, start+1, ... until predicate() holds (True) or timeout (False)."""
    end, t = time.monotonic() + timeout, start
    while time.monotonic() < end:
        client.publish_image(seq.frame(t).image)
        t += 1
        client.spin(1.0 / rate)
        if predicate():
            return True
    return predicate()


def test_runtime_parameters_take_effect_and_bad_ones_are_rejected(client, node):
    pc = AsyncParameterClient(client.node, "sam_ros")
    assert pc.wait_for_services(10)
    client.clear_pub.publish(String(data=""))
    seq = SceneSequence(29, height=240, width=320)
    headers = _stream(client, seq, 0, 3)
    assert client.wait(lambda: client.diag_int("frames_encoded") >= 2, 30), node.log

    # Rejected, with the reason, and nothing of the request applied (all or none).
    bad = [({"overlay_alpha": 2.0}, "overlay_alpha must be a finite number >= 0 and <= 1"),
           ({"prompt_wait_s": float("nan")}, "prompt_wait_s must be a finite number > 0"),
           ({"auto_region": [50.0, 10.0, 20.0, 60.0]}, "auto_region must be all zeros"),
           ({"lost_s": 0.5}, "lost_s (0.5) must be greater than occluded_s (1)"),
           ({"click_mode": "drag"}, "click_mode must be target or oneshot"),
           ({"checkpoint": "/models/sam_vit_h_4b8939.pth", "multimask": False},
            "checkpoint is read at start only: set it in the parameters file and restart the node"),
           ({"backend": "onnxruntime"}, "backend is read at start only")]
    for values, reason in bad:
        results = _set(client, pc, **values)
        assert not any(r.successful for r in results), values
        assert reason in results[0].reason, (values, results[0].reason)
    # One by one (SetParameters): each gets its own answer.
    fut = pc.set_parameters([Parameter("max_targets", value="many"), Parameter("auto_region", value=[1.0, 2.0])])
    assert client.wait(fut.done, 10)
    assert [(r.successful, r.reason) for r in fut.result().results] == [
        (False, "max_targets must be an integer (got 'many')"),
        (False, "auto_region must be 4 finite numbers [x0, y0, x1, y1] (got (1.0, 2.0))")]
    assert _get(client, pc, "overlay_alpha", "multimask", "checkpoint", "lost_s") == [0.5, True, "", 10.0]

    # Accepted and in effect: multimask off for clicks, automatic masks at a rate inside a region
    # with the thresholds for the shipped tiny model, tracking and queue settings.
    region = [40.0, 30.0, 200.0, 190.0]
    ok = _set(client, pc, multimask=False, auto_masks_rate=2.0, auto_points_per_side=6, auto_region=region,
              auto_pred_iou_thresh=0.5, auto_stability_thresh=0.6, occluded_s=0.5, lost_s=3.0,
              max_pending_prompts=16, prompt_wait_s=4.0)
    assert all(r.successful for r in ok), [r.reason for r in ok]
    assert _get(client, pc, "multimask", "auto_region", "lost_s") == [False, region, 3.0]
    assert node.wait_for_log("parameters set: multimask=False", 5)
    n = len(client.results)
    autos = lambda: [m for _, m in client.results[n:] if m.objects and m.objects[0].source == "auto"]  # noqa: E731
    assert _stream_until(client, seq, 3, lambda: len(autos()) >= 2), node.log[-2000:]   # unprompted, at the rate
    for m in autos():
        for o in m.objects:
            assert o.iou > 0.5 and o.stability >= 0.6
            assert o.bbox.x_offset >= region[0] and o.bbox.x_offset + o.bbox.width <= region[2]
            assert o.bbox.y_offset >= region[1] and o.bbox.y_offset + o.bbox.height <= region[3]
    assert _set(client, pc, auto_masks_rate=0.0)[0].successful
    client.spin(1.0)
    n = len(client.results)
    _stream(client, seq, 20, 6)
    assert not autos(), "automatic masks still published after auto_masks_rate was set to 0"
    scene = seq.frame(25)   # the newest frame: clicks segment the latest frame
    target = max((i for i in range(len(scene.masks)) if scene.level[i] == 0), key=lambda i: scene.masks[i].sum())
    ys, xs = np.nonzero(scene.masks[target])
    client.click_pub.publish(Point(x=float(np.median(xs)), y=float(np.median(ys)), z=0.0))
    assert client.wait(lambda: any(m.objects and m.objects[0].source == "click" for _, m in client.results[n:]), 20)
    click = next(m for _, m in client.results[n:] if m.objects and m.objects[0].source == "click").objects[0]
    assert click.chosen == -1 and not click.candidates and click.area > 0   # one mask: multimask is off
    assert _set(client, pc, multimask=True, occluded_s=1.0, lost_s=10.0, auto_region=[0.0] * 4)[0].successful
    client.clear_pub.publish(String(data=""))


def _camera_info(intr, header) -> CameraInfo:
    info = CameraInfo(header=header, width=intr.width, height=intr.height, distortion_model="plumb_bob")
    info.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def _depth_msg(depth, encoding, header) -> Image:
    msg = fill_image_msg(Image(), depth, encoding)
    msg.header = header
    return msg


def test_targets_in_3d_from_aligned_depth(client, node):
    n = client.node
    depth_pub = n.create_publisher(Image, "camera/depth/image", rclpy.qos.qos_profile_sensor_data)
    info_pub = n.create_publisher(CameraInfo, "camera/depth/camera_info", rclpy.qos.qos_profile_sensor_data)
    objects3d, clouds = [], []
    n.create_subscription(Object3DArray, "segmentation/objects3d", objects3d.append, 50)
    n.create_subscription(PointCloud2, "segmentation/points", clouds.append, 50)
    try:
        from vision_msgs.msg import Detection3DArray
    except ImportError:   # a vision_msgs without 3D detections: only ours
        Detection3DArray = None
    dets3d = []
    if Detection3DArray is not None:
        n.create_subscription(Detection3DArray, "segmentation/detections3d", dets3d.append, 50)
    assert client.wait(lambda: depth_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0, 10)
    client.clear_pub.publish(String(data=""))
    # Depth never arrived during the earlier tests: counted, and their colour results flowed.
    assert client.wait(lambda: client.diag_int("depth_unmatched") > 0, 5), client.diag
    assert client.diag_int("depth_received") == 0 and client.results

    scene = depth_scenes.tabletop("16UC1", noise_m=0.002, hole_fraction=0.1, flying_pixels=True, seed=3)
    intr = scene.intrinsics

    def frame(depth=scene.depth, encoding="16UC1", info=True):
        h = client.next_header("camera_color_optical_frame")
        if info:
            info_pub.publish(_camera_info(intr, h))
        dh = type(h)(stamp=h.stamp, frame_id="camera_depth_optical_frame")
        depth_pub.publish(_depth_msg(depth, encoding, dh))
        client.spin(0.05)            # depth first (drivers publish both; pairing tolerates either order)
        return client.publish_image(scene.image, header=h)

    def result_for(h, timeout=20):
        key = stamp_key(h.stamp)
        ok = client.wait(lambda: any(stamp_key(m.header.stamp) == key for m in objects3d), timeout)
        assert ok, node.log[-2000:]
        return next(m for m in objects3d if stamp_key(m.header.stamp) == key)

    # No CameraInfo yet: reported per frame; the colour results still come.
    headers = [frame(info=False) for _ in range(2)]
    client.spin(0.5)
    # start two targets: the yawed box and the sphere
    boxes = []
    for i in (0, 1):
        ys, xs = np.nonzero(scene.masks[i])
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    assert client.wait(lambda: client.diag_int("frames_encoded") >= 1, 30)
    client.prompts_pub.publish(PromptArray(header=headers[-1], prompts=[box_prompt(headers[-1], b, t)
                                                                          for b, t in zip(boxes, ("box3d", "ball3d"))]))
    assert client.wait(lambda: client.results_for("box3d"), 20), node.log[-2000:]
    h = frame(info=False)
    r = result_for(h)
    assert "no CameraInfo" in r.depth_error and not r.objects
    assert client.wait(lambda: stamp_key(h.stamp) in {stamp_key(m.header.stamp) for m in client.results_for("box3d")})

    # Calibrated: per target the centroid of the visible surface within 1 cm (objects ~1 m away),
    # points inside the object, the cloud labelled as segmentation/labels is.
    measured = []
    for _ in range(3):
        h = frame()
        r = result_for(h)
        assert r.depth_error == "" and r.header.frame_id == "camera_depth_optical_frame"
        assert stamp_key(r.header.stamp) == stamp_key(h.stamp) and abs(r.depth_offset_ms) < 1
        measured.append(r)
    labels = {o.target_id: o.label for o in client.results_for("box3d")[-1].objects}
    last = measured[-1]
    assert sorted(o.target_id for o in last.objects) == ["ball3d", "box3d"]
    for o in last.objects:
        i = 0 if o.target_id == "box3d" else 1
        assert o.valid and o.error == "" and o.label == labels[o.target_id], o
        c = np.array([o.centroid.x, o.centroid.y, o.centroid.z])
        err = np.linalg.norm(c - scene.true_points(i).mean(0))
        assert err < 0.01, f"{o.target_id}: centroid {err * 100:.2f} cm off"
        assert 0.8 < o.valid_fraction < 0.95   # 10% holes
        assert o.n_points > 100 and max(o.extents.x, o.extents.y, o.extents.z) < 0.25
    key = stamp_key(last.header.stamp)
    assert client.wait(lambda: any(stamp_key(c.header.stamp) == key for c in clouds), 10)
    cloud = next(c for c in clouds if stamp_key(c.header.stamp) == key)
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.width, cloud.point_step)
    xyz = np.stack([raw[:, 4 * k:4 * k + 4].copy().view("<f4")[:, 0] for k in range(3)], axis=1).astype(np.float64)
    lab = raw[:, 12:14].copy().view("<u2")[:, 0]
    for tid, i in (("box3d", 0), ("ball3d", 1)):
        pts = xyz[lab == labels[tid]]
        assert len(pts) > 100 and scene.objects[i].contains(pts, tol=0.01).mean() > 0.99, tid

    # The same boxes as standard 3D detections (where vision_msgs has them).
    if Detection3DArray is not None:
        assert client.wait(lambda: any(stamp_key(d.header.stamp) == key for d in dets3d), 10)
        det = next(d for d in dets3d if stamp_key(d.header.stamp) == key)
        assert det.header.frame_id == "camera_depth_optical_frame"
        assert sorted(d.id for d in det.detections) == sorted(o.target_id for o in last.objects)
        for d in det.detections:
            o = next(o for o in last.objects if o.target_id == d.id)
            assert d.bbox.center == o.box and d.bbox.size == o.extents
            assert d.results[0].hypothesis.class_id == "prompt" and 0 < d.results[0].hypothesis.score <= 1.5
            assert d.results[0].pose.pose.position == o.centroid

    # A depth image of another size, then depth that stops arriving: reported, colour flows on.
    h = frame(depth=scene.depth[::2, ::2].copy())
    assert "depth image is 320 x 240 but the colour image is 640 x 480" in result_for(h).depth_error
    unmatched = client.diag_int("depth_unmatched")
    h = client.publish_image(scene.image, header=client.next_header("camera_color_optical_frame"))
    assert "no depth image within 20 ms" in result_for(h).depth_error
    assert client.wait(lambda: stamp_key(h.stamp) in {stamp_key(m.header.stamp) for m in client.results_for("box3d")})
    assert client.wait(lambda: client.diag_int("depth_unmatched") > unmatched, 5)
    assert client.diag_int("depth_received") >= 6 and client.diag_int("objects3d_measured") >= 6
    client.clear_pub.publish(String(data=""))


@pytest.mark.parametrize("module", ["sam_ros.ros.node", "sam_ros.ros.lifecycle_node"])
def test_bad_start_up_parameters_stop_the_node_saying_which(module):
    proc = NodeProcess(DOMAIN, params={"overlay_alpha": "abc", "lost_s": 0.5}, name="sam_bad", module=module)
    try:
        assert proc.proc.wait(timeout=60) == 2, proc.log
        assert proc.wait_for_log("cannot start: bad parameters: overlay_alpha must be a number .got 'abc'.", 5), proc.log
        assert "Traceback" not in proc.log, proc.log
    finally:
        proc.stop()
