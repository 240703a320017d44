"""Conversions between ROS messages and the engine's numpy/Prompt types.

Images decode through sam_ros.engine.image_io (the one image conversion helper); malformed
messages raise :class:`ConversionError` with a message that says what is wrong.
"""
import array
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..engine.depth import CameraIntrinsics
from ..engine.image_io import (SUPPORTED_ENCODINGS, ConversionError, compressed_msg_to_rgb,  # noqa: F401
                               depth_msg_to_meters, image_msg_to_rgb, to_rgb)
from ..engine.prompts import Prompt


def fill_image_msg(msg: Any, array_hw: np.ndarray, encoding: str) -> Any:
    """Fill a sensor_msgs/Image from an H x W (x C) uint8/float32 array (one copy of the pixels)."""
    a = np.ascontiguousarray(array_hw)
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.strides[0])
    data = array.array("B")
    data.frombytes(a.reshape(-1).view(np.uint8))
    msg.data = data
    return msg


def prompt_from_msg(msg: Any, image_size: Tuple[int, int], low_res: int) -> Prompt:
    """sam_ros/Prompt -> engine Prompt (validated against the frame's size later by the predictor)."""
    points = np.array([[p.x, p.y] for p in msg.points], dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(list(msg.labels), dtype=np.int64)
    if len(labels) != len(points):
        if len(labels) == 0:
            labels = np.ones(len(points), np.int64)
        else:
            raise ConversionError(f"{len(labels)} labels for {len(points)} points")
    box = np.asarray(msg.box, dtype=np.float64) if msg.has_box else None
    mask_input = None
    if int(msg.mask_input.height) > 0:
        mask_input = mask_prompt_from_image(msg.mask_input, image_size, low_res)
    if len(points) == 0 and box is None and mask_input is None:
        raise ConversionError("prompt has no points, no box and no mask input")
    return Prompt(points, labels, box, mask_input, multimask=bool(msg.multimask))


def mask_prompt_from_image(msg: Any, image_size: Tuple[int, int], low_res: int) -> np.ndarray:
    """A mask prompt image -> 1 x L x L logits: 32FC1 of size L x L is taken as logits; a mono8
    mask of the frame's size is resized into the model's low-res frame as +/-10 logits."""
    enc = msg.encoding.lower()
    h, w = int(msg.height), int(msg.width)
    if enc == "32fc1":
        if (h, w) != (low_res, low_res):
            raise ConversionError(f"32FC1 mask input must be {low_res}x{low_res} logits, got {w}x{h}")
        data = np.frombuffer(msg.data, dtype=np.float32)
        if data.size < h * w:
            raise ConversionError("mask input data is shorter than its size")
        return data[: h * w].reshape(1, h, w).copy()
    if enc not in ("mono8", "8uc1"):
        raise ConversionError(f"mask input must be mono8 (frame size) or 32FC1 (low-res logits), got {msg.encoding!r}")
    if (h, w) != tuple(image_size):
        raise ConversionError(f"mono8 mask input is {w}x{h}, the frame is {image_size[1]}x{image_size[0]}")
    mask = image_msg_to_rgb(msg)[..., 0] > 0
    scale = low_res / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    small = cv2.resize(mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.full((1, low_res, low_res), -10.0, np.float32)
    out[0, :nh, :nw] = np.where(small > 0.5, 10.0, -10.0)
    return out


def boxes_from_detections(msg: Any) -> np.ndarray:
    """vision_msgs/Detection2DArray -> B x 4 (x0, y0, x1, y1). Duck-typed: works with the
    Humble+ layout (bbox.center.position.x) and the older one (bbox.center.x)."""
    boxes: List[Sequence[float]] = []
    for det in msg.detections:
        c = det.bbox.center
        pos = getattr(c, "position", c)
        cx, cy = float(pos.x), float(pos.y)
        sx, sy = float(det.bbox.size_x), float(det.bbox.size_y)
        boxes.append((cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def detection2d_array(msgs: Any, header: Any,
                      objects: Sequence[Tuple[str, str, Tuple[int, int, int, int], float]]) -> Any:
    """A vision_msgs/Detection2DArray of (target id, source, (x, y, w, h) pixel box, score) tuples:
    Detection2D.id = target id, bbox = the box's centre and size, one hypothesis (class_id = the
    source that started the target, score = predicted IoU). `msgs` is the vision_msgs.msg module
    (optional dependency, imported by the caller)."""
    arr = msgs.Detection2DArray(header=header)
    for target_id, source, (x, y, w, h), score in objects:
        det = msgs.Detection2D(header=header, id=target_id)
        c = det.bbox.center
        pos = getattr(c, "position", c)   # Humble+ (center.position.x) and older (center.x) layouts
        pos.x, pos.y = x + w / 2.0, y + h / 2.0
        det.bbox.size_x, det.bbox.size_y = float(w), float(h)
        hyp = msgs.ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = source, float(score)
        det.results = [hyp]
        arr.detections.append(det)
    return arr


def stamp_key(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (the embedding cache key)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time -> seconds."""
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def mask_crop(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Tight (x, y, w, h) of a bool (or 0/1 uint8) H x W mask, or None when empty."""
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    return None if w == 0 else (int(x), int(y), int(w), int(h))


def camera_info_to_intrinsics(msg: Any) -> CameraIntrinsics:
    """sensor_msgs/CameraInfo -> engine intrinsics (K, size, D); DepthError if uncalibrated."""
    return CameraIntrinsics.from_k(list(msg.k), int(msg.width), int(msg.height), list(msg.d),
                                   str(msg.distortion_model))


def fill_pointcloud2_msg(msg: Any, points: np.ndarray, header: Any, labels: Optional[np.ndarray] = None) -> Any:
    """Fill a sensor_msgs/PointCloud2 with N x 3 float32 points (x, y, z in metres; an unordered
    cloud: height 1, width N) under header (the depth image's frame and stamp). With labels (N
    uint16): a `label` field too (a 16-byte point: x, y, z float32, label uint16, 2 bytes padding)."""
    from sensor_msgs.msg import PointField

    pts = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    if labels is None:
        packed, step = pts, 12
    else:
        step = 16
        packed = np.zeros(len(pts), np.dtype({"names": ["xyz", "label"], "formats": [("<f4", 3), "<u2"],
                                              "offsets": [0, 12], "itemsize": step}))
        packed["xyz"], packed["label"] = pts, np.asarray(labels, np.uint16).reshape(-1)
        fields.append(PointField(name="label", offset=12, datatype=PointField.UINT16, count=1))
    msg.header = header
    msg.height, msg.width = 1, int(len(pts))
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = step
    msg.row_step = step * int(len(pts))
    msg.is_dense = bool(np.isfinite(pts).all())
    data = array.array("B")
    data.frombytes(packed.reshape(-1).view(np.uint8))
    msg.data = data
    return msg
