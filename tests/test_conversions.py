"""Message conversions (no DDS needed): every supported encoding, and clear errors for bad input."""
import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")
from geometry_msgs.msg import Point  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from sam_ros.msg import Prompt  # noqa: E402
from sam_ros.ros import conversions as conv  # noqa: E402

pytestmark = pytest.mark.ros  # rclpy's message classes: run on every ROS distribution CI tests

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def _msg(data: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    rows = data.reshape(data.shape[0], -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], axis=1)
    m = Image(height=data.shape[0], width=data.shape[1], encoding=encoding, is_bigendian=int(bigendian))
    m.step = rows.shape[1]
    m.data = rows.tobytes()
    return m


@pytest.mark.parametrize("pad", [0, 7])
def test_color_encodings(pad):
    assert np.array_equal(conv.image_msg_to_rgb(_msg(RGB, "rgb8", pad)), RGB)
    assert np.array_equal(conv.image_msg_to_rgb(_msg(RGB[..., ::-1].copy(), "bgr8", pad)), RGB)
    alpha = np.full(RGB.shape[:2] + (1,), 200, np.uint8)
    assert np.array_equal(conv.image_msg_to_rgb(_msg(np.concatenate([RGB, alpha], 2), "rgba8", pad)), RGB)
    assert np.array_equal(conv.image_msg_to_rgb(_msg(np.concatenate([RGB[..., ::-1], alpha], 2), "bgra8", pad)), RGB)


def test_mono_encodings():
    gray = RGB[..., 0].copy()
    out = conv.image_msg_to_rgb(_msg(gray, "mono8"))
    assert out.shape == RGB.shape and np.array_equal(out[..., 1], gray)
    g16 = gray.astype(np.uint16) * 257
    for big in (False, True):
        data = g16.astype(">u2" if big else "<u2")
        out = conv.image_msg_to_rgb(_msg(data, "mono16", bigendian=big))
        assert np.array_equal(out[..., 2], gray)


def test_yuv_and_bayer():
    # Neutral chroma (U = V = 128) and luma alternating 50 / 200: a grey pattern whose dark and
    # bright pixels are where the byte order (UYVY vs YUYV) puts them.
    uyvy = np.zeros((4, 8, 2), np.uint8)
    uyvy[..., 0] = 128                    # U, V interleaved in the first byte of each pair
    uyvy[..., 1] = np.tile([50, 200], 4)  # Y0, Y1
    out = conv.image_msg_to_rgb(_msg(uyvy, "uyvy"))
    assert out.shape == (4, 8, 3)
    assert np.all(out[:, 0::2] < 70) and np.all(out[:, 1::2] > 180)
    yuyv = uyvy[..., ::-1].copy()         # Y first
    out = conv.image_msg_to_rgb(_msg(yuyv, "yuyv"))
    assert np.all(out[:, 0::2] < 70) and np.all(out[:, 1::2] > 180)
    bayer = RGB[..., 1].copy()
    assert conv.image_msg_to_rgb(_msg(bayer, "bayer_rggb8")).shape == RGB.shape


@pytest.mark.parametrize("mutate, match", [
    (lambda m: setattr(m, "encoding", "rgb16"), "unsupported image encoding"),
    (lambda m: setattr(m, "step", 10), "step 10 is smaller"),
    (lambda m: setattr(m, "data", bytes(100)), "needs"),
    (lambda m: (setattr(m, "height", 0), setattr(m, "data", b"")), "empty image"),
])
def test_bad_images_raise_conversion_error(mutate, match):
    m = _msg(RGB, "rgb8")
    mutate(m)
    with pytest.raises(conv.ConversionError, match=match):
        conv.image_msg_to_rgb(m)


def test_compressed():
    ok, jpg = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    m = CompressedImage(format="png")
    m.data = jpg.tobytes()
    assert np.array_equal(conv.to_rgb(m), RGB)
    m.data = jpg.tobytes()[:50]
    with pytest.raises(conv.ConversionError, match="cannot decode"):
        conv.to_rgb(m)
    m.data = b""
    with pytest.raises(conv.ConversionError, match="no data"):
        conv.to_rgb(m)


def test_fill_image_msg_round_trip():
    m = conv.fill_image_msg(Image(), RGB, "rgb8")
    assert (m.height, m.width, m.step) == (37, 53, 53 * 3)
    assert np.array_equal(conv.image_msg_to_rgb(m), RGB)


def test_prompt_from_msg():
    p = Prompt(has_box=True, multimask=False)
    p.points = [Point(x=1.0, y=2.0), Point(x=3.0, y=4.0)]
    p.labels = [1, 0]
    p.box = [0.0, 1.0, 10.0, 11.0]
    out = conv.prompt_from_msg(p, (100, 100), 96)
    assert out.points.tolist() == [[1, 2], [3, 4]] and out.labels.tolist() == [1, 0]
    assert out.box.tolist() == [0, 1, 10, 11] and not out.multimask
    p.labels = [1]
    with pytest.raises(conv.ConversionError, match="1 labels for 2 points"):
        conv.prompt_from_msg(p, (100, 100), 96)
    with pytest.raises(conv.ConversionError, match="no points"):
        conv.prompt_from_msg(Prompt(), (100, 100), 96)


def test_mask_prompt_from_mono8_and_logits():
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 20:60] = 255
    m = conv.fill_image_msg(Image(), mask, "mono8")
    logits = conv.mask_prompt_from_image(m, (60, 80), 96)
    assert logits.shape == (1, 96, 96)
    assert logits[0, 20, 50] > 0 and logits[0, 2, 2] < 0 and logits[0, 90, 2] < 0  # padding is background
    with pytest.raises(conv.ConversionError, match="frame is"):
        conv.mask_prompt_from_image(m, (61, 80), 96)
    f = conv.fill_image_msg(Image(), np.zeros((96, 96), np.float32), "32FC1")
    assert conv.mask_prompt_from_image(f, (60, 80), 96).shape == (1, 96, 96)
    with pytest.raises(conv.ConversionError, match="96x96"):
        conv.mask_prompt_from_image(conv.fill_image_msg(Image(), np.zeros((9, 9), np.float32), "32FC1"), (60, 80), 96)


def test_boxes_from_detection_like_messages():
    class P:
        def __init__(self, x, y):
            self.x, self.y = x, y

    class Center:
        def __init__(self, x, y):
            self.position = P(x, y)

    class BBox:
        def __init__(self):
            self.center, self.size_x, self.size_y = Center(50, 40), 20, 10

    class Det:
        bbox = BBox()

    class Arr:
        detections = [Det(), Det()]

    assert conv.boxes_from_detections(Arr()).tolist() == [[40, 35, 60, 45]] * 2


def test_mask_crop_is_the_tight_box():
    rng = np.random.default_rng(3)
    assert conv.mask_crop(np.zeros((48, 64), bool)) is None
    for _ in range(20):
        m = np.zeros((48, 64), bool)
        x0, y0 = rng.integers(0, 64), rng.integers(0, 48)
        x1, y1 = rng.integers(x0, 64), rng.integers(y0, 48)
        m[y0 : y1 + 1, x0 : x1 + 1] = rng.random((y1 - y0 + 1, x1 - x0 + 1)) < 0.3
        m[y0, x0] = m[y1, x1] = True  # the box's corners are set
        assert conv.mask_crop(m) == (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
        assert conv.mask_crop(m.astype(np.uint8)) == conv.mask_crop(m)
    # a strided view into a larger mask
    big = np.zeros((80, 100), bool)
    big[15, 12] = True
    view = big[10:58, 5:69]
    assert not view.flags.c_contiguous and conv.mask_crop(view) == (7, 5, 1, 1)


@pytest.mark.parametrize("pad", [0, 6])
def test_depth_images_to_meters(pad):
    mm = np.array([[0, 1000, 1234], [65535, 500, 0]], np.uint16)
    for big in (False, True):
        m = conv.depth_msg_to_meters(_msg(mm.astype(">u2" if big else "<u2"), "16UC1", pad, bigendian=big))
        np.testing.assert_allclose(m, [[np.nan, 1.0, 1.234], [65.535, 0.5, np.nan]], rtol=1e-6)
    metres = np.array([[0.0, 1.5, np.nan], [np.inf, 0.25, 2.0]], np.float32)
    m = conv.depth_msg_to_meters(_msg(metres, "32FC1", pad))
    assert m.dtype == np.float32 and np.isnan(m[0, 0]) and np.isnan(m[0, 2]) and np.isnan(m[1, 0])
    assert (m[0, 1], m[1, 1], m[1, 2]) == (1.5, 0.25, 2.0)
    with pytest.raises(conv.ConversionError, match="unsupported depth encoding 'rgb8'"):
        conv.depth_msg_to_meters(_msg(RGB, "rgb8"))
    short = _msg(metres, "32FC1")
    short.data = short.data[:10]
    with pytest.raises(conv.ConversionError, match="image data has 10 bytes"):
        conv.depth_msg_to_meters(short)


def test_camera_info_and_point_cloud():
    from sensor_msgs.msg import CameraInfo, PointCloud2
    from std_msgs.msg import Header
    from sam_ros.engine.depth import DepthError

    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob",
                      k=[615.0, 0.0, 321.5, 0.0, 616.0, 238.0, 0.0, 0.0, 1.0], d=[0.1, -0.2, 0.0, 0.0, 0.05])
    intr = conv.camera_info_to_intrinsics(info)
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height) == (615.0, 616.0, 321.5, 238.0, 640, 480)
    assert intr.distorted and intr.distortion == (0.1, -0.2, 0.0, 0.0, 0.05)
    with pytest.raises(DepthError, match="not calibrated"):
        conv.camera_info_to_intrinsics(CameraInfo(width=640, height=480))

    pts = RNG.normal(0, 1, (57, 3)).astype(np.float32)
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = conv.fill_pointcloud2_msg(PointCloud2(), pts, header)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 57, 12, 57 * 12)
    assert [f.name for f in msg.fields] == ["x", "y", "z"] and msg.is_dense
    assert msg.header.frame_id == "camera_color_optical_frame" and msg.header.stamp.nanosec == 345
    # Read back as any PointCloud2 consumer does: fields by offset and datatype.
    assert all(f.datatype == f.FLOAT32 and f.count == 1 for f in msg.fields)
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.width, msg.point_step)
    back = np.stack([raw[:, f.offset:f.offset + 4].copy().view("<f4")[:, 0] for f in msg.fields], axis=1)
    np.testing.assert_array_equal(back, pts)
    empty = conv.fill_pointcloud2_msg(PointCloud2(), np.zeros((0, 3), np.float32), header)
    assert empty.width == 0 and len(empty.data) == 0


def test_point_cloud_with_target_labels():
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    pts = RNG.normal(0, 1, (9, 3)).astype(np.float32)
    labels = np.array([1, 1, 2, 2, 2, 7, 7, 65535, 3], np.uint16)
    msg = conv.fill_pointcloud2_msg(PointCloud2(), pts, Header(frame_id="depth"), labels)
    assert (msg.point_step, msg.row_step, msg.width) == (16, 16 * 9, 9)
    by_name = {f.name: f for f in msg.fields}
    assert list(by_name) == ["x", "y", "z", "label"] and by_name["label"].datatype == by_name["label"].UINT16
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(9, 16)
    xyz = np.stack([raw[:, by_name[n].offset:by_name[n].offset + 4].copy().view("<f4")[:, 0] for n in "xyz"], axis=1)
    np.testing.assert_array_equal(xyz, pts)
    off = by_name["label"].offset
    np.testing.assert_array_equal(raw[:, off:off + 2].copy().view("<u2")[:, 0], labels)
