"""Conversions between ROS messages and the engine's numpy/Prompt types.

The single image conversion helper of the project: ``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage`` to an RGB uint8 array with numpy/OpenCV (PyPI's cv_bridge is the
broken ROS 1 port; a real cv_bridge is not needed). Every malformed input raises
:class:`ConversionError` with a message that says what is wrong.
"""
import array
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..engine.prompts import InputError, Prompt


class ConversionError(InputError):
    """A message that cannot be converted (bad encoding, size, data)."""


# encoding -> (channels, dtype, conversion to RGB or None for direct channel handling)
_RAW_ENCODINGS = {
    "rgb8": (3, np.uint8, None),
    "bgr8": (3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": (4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "8uc1": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "8uc3": (3, np.uint8, cv2.COLOR_BGR2RGB),   # OpenCV's default channel order
    "8uc4": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono16": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "16uc1": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "uyvy": (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422": (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    "yuyv": (2, np.uint8, cv2.COLOR_YUV2RGB_YUYV),
    "yuv422_yuy2": (2, np.uint8, cv2.COLOR_YUV2RGB_YUYV),
    "bayer_rggb8": (1, np.uint8, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, np.uint8, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, np.uint8, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, np.uint8, cv2.COLOR_BayerGB2RGB),
}

SUPPORTED_ENCODINGS = tuple(sorted(_RAW_ENCODINGS))


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> H x W x 3 uint8 RGB (a copy; the message is not kept)."""
    enc = (msg.encoding or "").lower()
    if enc not in _RAW_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {msg.encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ConversionError(f"empty image ({w}x{h})")
    channels, dtype, code = _RAW_ENCODINGS[enc]
    row_bytes = w * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ConversionError(f"step {step} is smaller than width x bytes per pixel = {row_bytes} ({enc}, {w}x{h})")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * (h - 1) + row_bytes:
        raise ConversionError(f"image data has {data.size} bytes, {enc} {w}x{h} with step {step} needs {step * h}")
    rows = np.lib.stride_tricks.as_strided(data, shape=(h, row_bytes), strides=(step, 1))
    pixels = rows.view(dtype) if dtype != np.uint8 else rows
    if dtype == np.uint16:
        big = bool(msg.is_bigendian)
        pixels = pixels.view(">u2" if big else "<u2").astype(np.uint16)
        pixels = (pixels >> 8).astype(np.uint8)
    pixels = pixels.reshape(h, w, channels) if channels > 1 else pixels.reshape(h, w)
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ...) -> H x W x 3 uint8 RGB."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ConversionError(f"compressed image ({msg.format or 'unknown format'}) has no data")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ConversionError(f"cannot decode compressed image (format {msg.format!r}, {data.size} bytes): corrupt or unsupported")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_rgb(msg: Any) -> np.ndarray:
    """Either image message type -> RGB."""
    return compressed_msg_to_rgb(msg) if hasattr(msg, "format") else image_msg_to_rgb(msg)


def fill_image_msg(msg: Any, array_hw: np.ndarray, encoding: str) -> Any:
    """Fill a sensor_msgs/Image from an H x W (x C) uint8/float32 array."""
    a = np.ascontiguousarray(array_hw)
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.strides[0])
    msg.data = array.array("B", a.tobytes())
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


def stamp_key(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (the embedding cache key)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def mask_crop(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Tight (x, y, w, h) of a bool mask, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
