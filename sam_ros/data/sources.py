"""Image sources for the data engine: a folder of images, a video file, or a ROS 2 bag.

Each source yields :class:`Frame` items (a stable name, the RGB image or the error that made it
unreadable, and a timestamp), sampled at a given rate. Bags (sqlite3 or MCAP) are read with
`rosbags`, no ROS installation needed; image messages decode with the project's image helper.
"""
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import cv2
import numpy as np

from ..engine.image_io import ConversionError, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class Frame:
    name: str                       # stable, file-name safe (used for output files and resume)
    image: Optional[np.ndarray]     # H x W x 3 uint8 RGB, None when unreadable
    stamp_ns: int = 0
    error: str = ""
    data: Optional[bytes] = None    # the image file's bytes, when decoding is left to the consumer
    file_name: str = ""             # the image file's name (folder sources)


def open_source(path: str, rate: float = 0.0, topic: str = "", decode: bool = True) -> Iterator[Frame]:
    """Frames of a folder, video or bag. rate: frames per second to keep (0: all). decode=False:
    a folder's frames carry the file's bytes instead of the image (`decode_frame` decodes them,
    e.g. on another machine); videos and bags are always decoded."""
    if os.path.isdir(path) and _is_bag_dir(path):
        return read_bag(path, topic, rate)
    if os.path.isdir(path):
        return read_folder(path, decode)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".db3", ".mcap"):
        return read_bag(path, topic, rate)
    if ext in VIDEO_EXTENSIONS:
        return read_video(path, rate)
    raise ValueError(f"{path}: not a folder of images, a video ({', '.join(VIDEO_EXTENSIONS)}) or a ROS 2 bag")


def _is_bag_dir(path: str) -> bool:
    return os.path.exists(os.path.join(path, "metadata.yaml")) or any(
        f.endswith((".db3", ".mcap")) for f in os.listdir(path))


def read_folder(path: str, decode: bool = True) -> Iterator[Frame]:
    for name in sorted(os.listdir(path)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            with open(os.path.join(path, name), "rb") as f:
                frame = Frame(stem, None, data=f.read(), file_name=name)
        except OSError as e:
            yield Frame(stem, None, error=f"cannot read image file {name}: {e.strerror}")
            continue
        yield decode_frame(frame) if decode else frame


def decode_frame(frame: Frame) -> Frame:
    """A frame carrying an image file's bytes -> the frame with its RGB image (EXIF orientation
    applied, as cv2.imread does), or with the error when the bytes are no image."""
    try:
        bgr = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR) if frame.data else None
    except cv2.error:
        bgr = None
    if bgr is None:
        return Frame(frame.name, None, frame.stamp_ns, error=f"cannot decode image file {frame.file_name}")
    return Frame(frame.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), frame.stamp_ns, file_name=frame.file_name)


def read_video(path: str, rate: float = 0.0) -> Iterator[Frame]:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    step = max(1, int(round(fps / rate))) if rate > 0 else 1
    stem = os.path.splitext(os.path.basename(path))[0]
    index = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % step == 0:
                yield Frame(f"{stem}_{index:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), int(index / fps * 1e9))
            index += 1
    finally:
        cap.release()


IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def read_bag(path: str, topic: str = "", rate: float = 0.0) -> Iterator[Frame]:
    """Image messages of one topic of a ROS 2 bag (sqlite3 or MCAP). With no topic given, the
    bag's only image topic. A message that does not deserialize or decode yields an error frame."""
    from pathlib import Path

    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = Path(path)
    if bag.is_file():  # a bare .db3/.mcap file: rosbags wants the folder
        bag = bag.parent
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        image_topics = {c.topic: c for c in reader.connections if c.msgtype in IMAGE_TYPES}
        if topic:
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:
                raise ValueError(f"{path}: no topic {topic!r} (image topics: {', '.join(image_topics) or 'none'})")
            if conns[0].msgtype not in IMAGE_TYPES:
                raise ValueError(f"{path}: topic {topic} has type {conns[0].msgtype}, not an image type")
        else:
            if len(image_topics) != 1:
                raise ValueError(f"{path}: give --topic; image topics: {', '.join(image_topics) or 'none'}")
            conns = [next(iter(image_topics.values()))]
        min_gap = int(1e9 / rate) if rate > 0 else 0
        last = None
        for i, (conn, t, raw) in enumerate(reader.messages(connections=conns)):
            if last is not None and t - last < min_gap:
                continue
            last = t
            name = f"{conn.topic.strip('/').replace('/', '_')}_{t}"
            try:
                msg = reader.deserialize(raw, conn.msgtype)
                yield Frame(name, to_rgb(msg), t)
            except ConversionError as e:
                yield Frame(name, None, t, error=str(e))
            except Exception as e:  # a broken message: report and go on
                yield Frame(name, None, t, error=f"cannot deserialize message {i} of {conn.topic}: {e}")


def load_detections_json(path: str) -> Dict[str, List[List[float]]]:
    """Boxes per image from a COCO JSON (images + annotations with XYWH bbox): file stem -> list of
    (x0, y0, x1, y1)."""
    import json

    with open(path) as f:
        data = json.load(f)
    names = {im["id"]: os.path.splitext(os.path.basename(im["file_name"]))[0] for im in data.get("images", [])}
    out: Dict[str, List[List[float]]] = {}
    for a in data.get("annotations", []):
        x, y, w, h = a["bbox"]
        out.setdefault(names.get(a["image_id"], str(a["image_id"])), []).append([x, y, x + w, y + h])
    return out
