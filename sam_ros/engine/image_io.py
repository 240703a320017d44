"""Decoding camera images to RGB: the project's single image conversion helper.

Works on anything with the fields of ``sensor_msgs/Image`` (height, width, encoding, step,
is_bigendian, data) or ``sensor_msgs/CompressedImage`` (format, data): rclpy messages, messages
read from bags with rosbags, or plain objects. numpy/OpenCV only: PyPI's cv_bridge is the broken
ROS 1 port, and a real cv_bridge is not needed. Malformed input raises :class:`ConversionError`
saying what is wrong.
"""
from typing import Any

import cv2
import numpy as np

from .prompts import InputError


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
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ConversionError(f"empty image ({w}x{h})")
    channels, dtype, code = _RAW_ENCODINGS[enc]
    pixels = _pixels(msg, enc, channels, dtype)
    if dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def _pixels(msg: Any, enc: str, channels: int, dtype: Any) -> np.ndarray:
    """The H x W (x C) pixels of a raw image message as dtype in native byte order (a view when
    possible), honouring step (row padding) and is_bigendian; checks sizes."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ConversionError(f"step {step} is smaller than width x bytes per pixel = {row_bytes} ({enc}, {w}x{h})")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * (h - 1) + row_bytes:
        raise ConversionError(f"image data has {data.size} bytes, {enc} {w}x{h} with step {step} needs {step * h}")
    rows = np.lib.stride_tricks.as_strided(data, shape=(h, row_bytes), strides=(step, 1))
    if dtype == np.uint8:
        pixels = rows
    else:
        order = ">" if bool(msg.is_bigendian) else "<"
        pixels = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order)).astype(dtype, copy=False)
    return pixels.reshape(h, w, channels) if channels > 1 else pixels.reshape(h, w)


DEPTH_ENCODINGS = {"16uc1": np.uint16, "mono16": np.uint16, "32fc1": np.float32}


def depth_msg_to_meters(msg: Any) -> np.ndarray:
    """sensor_msgs/Image with depth (16UC1 / mono16 millimetres, 32FC1 metres) -> H x W float32
    metres, NaN where there is no depth (0, NaN, inf)."""
    from .depth import depth_to_meters  # one definition of the units and holes

    enc = (msg.encoding or "").lower()
    if enc not in DEPTH_ENCODINGS:
        raise ConversionError(f"unsupported depth encoding {msg.encoding!r} (16UC1 millimetres or 32FC1 metres)")
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ConversionError(f"empty depth image ({w}x{h})")
    pixels = _pixels(msg, enc, 1, DEPTH_ENCODINGS[enc])
    return depth_to_meters(pixels, "32FC1" if enc == "32fc1" else "16UC1")


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
