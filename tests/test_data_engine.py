"""The data engine end to end: a folder, a video and a ROS 2 bag written here with rosbags go in,
an SA-1B style dataset comes out; resume after an interruption gives the same dataset; corrupt
inputs are skipped; the viewer renders a PNG."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from sam_ros.data.scenes import SceneSequence
from sam_ros.engine.mask_utils import rle_to_mask
from sam_ros.tools import data_engine, view_masks

ARGS = ["--points-per-side", "6", "--pred-iou-thresh", "0.5", "--stability-thresh", "0.6", "--no-progress"]


def _frames(n=4, h=192, w=256):
    seq = SceneSequence(17, height=h, width=w)
    return [seq.frame(3 * t).image for t in range(n)]


def _dataset(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json") and name != "summary.json":
            with open(os.path.join(folder, name)) as f:
                out[name] = json.load(f)
    return out


def test_folder_with_a_corrupt_image_and_resume(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    for i, img in enumerate(_frames()):
        cv2.imwrite(str(src / f"frame_{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (src / "frame_9.png").write_bytes(b"not a png at all")
    full = tmp_path / "full"
    assert data_engine.main([str(src), "--out", str(full)] + ARGS) == 0
    summary = json.loads((full / "summary.json").read_text())
    assert set(summary["skipped"]) == {"frame_9"} and len(summary["images"]) == 4
    data = _dataset(full)
    assert len(data) == 4
    for name, rec in data.items():
        img = cv2.imread(str(full / rec["image"]["file_name"]))
        assert img.shape[:2] == (rec["image"]["height"], rec["image"]["width"])
        for ann in rec["annotations"]:
            m = rle_to_mask(ann["segmentation"])
            assert m.sum() == ann["area"] > 0
            assert set(ann) >= {"bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"}

    # Interrupted after 2 images (the limit), then resumed: the same dataset.
    part = tmp_path / "part"
    assert data_engine.main([str(src), "--out", str(part), "--limit", "2"] + ARGS) == 0
    assert len(_dataset(part)) == 2
    assert data_engine.main([str(src), "--out", str(part)] + ARGS) == 0
    assert _dataset(part) == data

    png = view_masks.render(str(full / "frame_0.json"), str(tmp_path / "view.png"))
    assert cv2.imread(png).shape[:2] == (192, 256)


def test_semi_automatic_stage_with_detector_boxes(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    seq = SceneSequence(17, height=192, width=256)
    scene = seq.frame(0)
    cv2.imwrite(str(src / "f0.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    boxes = []
    for i in np.flatnonzero(scene.level == 0)[:2]:
        ys, xs = np.nonzero(scene.masks[i])
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)])
    dets = {"images": [{"id": 1, "file_name": "f0.png"}],
            "annotations": [{"id": i, "image_id": 1, "bbox": b} for i, b in enumerate(boxes)]}
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    assert data_engine.main([str(src), "--out", str(out), "--detections", str(tmp_path / "dets.json")] + ARGS) == 0
    rec = _dataset(out)["f0.json"]
    box_anns = [a for a in rec["annotations"] if a["source"] == "box"]
    auto = [a for a in rec["annotations"] if a["source"] == "auto"]
    assert len(box_anns) == len(boxes)
    covered = np.zeros((192, 256), bool)
    for a in box_anns:
        covered |= rle_to_mask(a["segmentation"])
    for a in auto:  # automatic masks fill in only what the boxes missed
        m = rle_to_mask(a["segmentation"])
        assert (m & covered).sum() <= 0.5 * m.sum()


def test_video_input_sampled_at_a_rate(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 192))
    for img in _frames(10):
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    assert data_engine.main([path, "--out", str(out), "--rate", "5"] + ARGS) == 0
    assert sorted(_dataset(out)) == [f"clip_{i:06d}.json" for i in range(0, 10, 2)]


def write_camera_bag(bag, frames):
    """A ROS 2 bag (rosbags) with the RGB frames on /camera/image_raw at 1 s apart, then one
    message whose data is too short for its size (a broken message)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    h, w = frames[0].shape[:2]
    with Writer(bag, version=8) as writer:
        conn = writer.add_connection("/camera/image_raw", Image.__msgtype__, typestore=store)
        for i, img in enumerate(frames):
            msg = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=h, width=w,
                        encoding="rgb8", is_bigendian=0, step=w * 3, data=img.reshape(-1))
            writer.write(conn, i * 1_000_000_000, store.serialize_cdr(msg, Image.__msgtype__))
        bad = Image(header=Header(stamp=Time(sec=9, nanosec=0), frame_id="cam"), height=h, width=w,
                    encoding="rgb8", is_bigendian=0, step=w * 3, data=np.zeros(100, np.uint8))
        writer.write(conn, 9_000_000_000, store.serialize_cdr(bad, Image.__msgtype__))


def test_ros2_bag_end_to_end_with_a_broken_message(tmp_path):
    pytest.importorskip("rosbags")
    bag = tmp_path / "bag"
    frames = _frames(3)
    write_camera_bag(bag, frames)
    out = tmp_path / "out"
    assert data_engine.main([str(bag), "--out", str(out), "--topic", "/camera/image_raw"] + ARGS) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["images"]) == 3 and len(summary["skipped"]) == 1
    assert "needs" in next(iter(summary["skipped"].values()))
    data = _dataset(out)
    first = data["camera_image_raw_0.json"]
    stored = cv2.cvtColor(cv2.imread(str(out / first["image"]["file_name"])), cv2.COLOR_BGR2RGB)
    # The JPEG (quality 95) of the bag's first frame, not of another one.
    assert np.abs(stored.astype(int) - frames[0]).mean() < 8 < np.abs(stored.astype(int) - frames[2]).mean()
    shutil.rmtree(out)


def test_data_engine_output_is_a_training_dataset(tmp_path):
    """The SA-1B layout the engine writes is what the trainer reads (fine-tuning on own footage)."""
    from sam_ros.training.datasets import MaskJsonDataset

    src = tmp_path / "images"
    src.mkdir()
    for i, img in enumerate(_frames(3)):
        cv2.imwrite(str(src / f"f{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    assert data_engine.main([str(src), "--out", str(out)] + ARGS) == 0
    data = MaskJsonDataset(str(out))
    records = _dataset(out)
    assert len(data) == sum(1 for r in records.values() if r["annotations"])
    sample = data.sample(0)
    rec = records[f"{data.records[0]['id']}.json"]
    assert sample.image.shape[:2] == (rec["image"]["height"], rec["image"]["width"])
    assert len(sample.masks) == len([a for a in rec["annotations"] if a["area"] >= 16])
    assert all(m.sum() >= 16 for m in sample.masks)
