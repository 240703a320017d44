"""The data engine: raw footage -> an SA-1B style dataset of masks.

    python -m sam_ros.tools.data_engine INPUT --out dataset/ [--rate 1] [--topic /camera/image_raw]
        [--detections dets.json] [--checkpoint sam_vit_b_01ec64.pth] [--points-per-side 32]
        [--ray [ADDRESS] [--workers N]]

INPUT is a folder of images, a video file, or a ROS 2 bag (sqlite3 or MCAP, read with rosbags).
- fully automatic stage (always): automatic masks from a point grid;
- semi-automatic stage (with --detections, a COCO JSON of boxes per image): the boxes prompt the
  model first, then automatic masks fill in what they missed (an automatic mask is dropped when
  more than --overlap of it lies on prompted masks).
Output: per image `<name>.jpg` and `<name>.json` ({"image": {...}, "annotations": [...]} with COCO
RLE segmentation, bbox, area, predicted_iou, stability_score, point_coords, crop_box) and
`summary.json`. Re-running skips images whose JSON exists; an unreadable image or broken bag
message is logged and skipped, and nothing already written is lost (files are written atomically).
With --ray the images are labelled by Ray actors that keep the model loaded (one per GPU with
--device cuda), on a running cluster at ADDRESS or on a local one; the output is the same
(sam_ros/tools/data_engine_ray.py).
"""
import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from ..data.sources import load_detections_json, open_source
from ..engine.automatic import AutomaticMaskGenerator
from ..engine.factory import create_predictor
from ..engine.mask_utils import encode_rle, mask_to_rle, masks_to_boxes
from ..model.checkpoint import CheckpointError


class EngineError(RuntimeError):
    """The run cannot go on (e.g. no Ray worker could load the model); a re-run resumes."""


def _atomic_write(path: str, data: bytes) -> None:
    """Write a whole file or nothing (an interrupted run never leaves a half-written file)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def prompted_annotations(predictor, embedding, boxes: List[List[float]], size) -> List[Dict[str, Any]]:
    """Masks for detector boxes (single-mask output), as annotation records."""
    import torch

    if not boxes:
        return []
    pred = predictor.decode(embedding, box=np.asarray(boxes, dtype=np.float64), multimask_output=False)
    out = []
    for i, box in enumerate(boxes):
        mask = pred.masks[i, 0]
        if not mask.any():
            continue
        b = masks_to_boxes(torch.as_tensor(mask)).tolist()
        out.append({"segmentation": mask, "area": int(mask.sum()), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "predicted_iou": float(pred.iou_predictions[i, 0]), "stability_score": float(pred.stability_scores[i, 0]),
                    "point_coords": [], "box_prompt": [float(v) for v in box],
                    "crop_box": [0, 0, size[1], size[0]], "source": "box"})
    return out


def process_image(name: str, image: np.ndarray, predictor, generator: AutomaticMaskGenerator,
                  boxes: List[List[float]], overlap: float) -> Dict[str, Any]:
    h, w = image.shape[:2]
    embedding = predictor.encode(image)
    anns = prompted_annotations(predictor, embedding, boxes, (h, w))
    covered = np.zeros((h, w), bool)
    for a in anns:
        covered |= a["segmentation"]
    for rec in generator.generate(image, embedding=embedding):
        mask = rec["segmentation"]
        if anns and (mask & covered).sum() > overlap * rec["area"]:
            continue  # already annotated by a box prompt
        rec["source"] = "auto"
        anns.append(rec)
    records = []
    for i, a in enumerate(anns):
        rle = encode_rle(mask_to_rle(a["segmentation"]))
        rec = {k: v for k, v in a.items() if k != "segmentation"}
        rec.update({"id": i, "segmentation": rle})
        records.append(rec)
    return {"image": {"image_id": name, "file_name": f"{name}.jpg", "height": h, "width": w}, "annotations": records}


def make_generator(predictor, a: argparse.Namespace) -> AutomaticMaskGenerator:
    """The fully automatic stage with the command line's settings."""
    return AutomaticMaskGenerator(predictor, points_per_side=a.points_per_side, points_per_batch=a.points_per_batch,
                                  pred_iou_thresh=a.pred_iou_thresh, stability_score_thresh=a.stability_thresh,
                                  crop_n_layers=a.crop_layers, min_mask_region_area=a.min_region_area,
                                  output_mode="binary_mask")


def label_image(name: str, image: np.ndarray, predictor, generator: AutomaticMaskGenerator,
                boxes: List[List[float]], overlap: float) -> Tuple[bytes, bytes]:
    """One image's output files: (the JPEG, the annotation JSON), as bytes. The same bytes for the
    same image and settings wherever it runs (local loop or Ray actor)."""
    record = process_image(name, image, predictor, generator, boxes, overlap)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return jpg.tobytes(), json.dumps(record).encode()


def summary_entry(record_json: bytes) -> Dict[str, int]:
    """What summary.json keeps of one image: its mask counts."""
    anns = json.loads(record_json)["annotations"]
    return {"masks": len(anns), "box_masks": sum(1 for r in anns if r.get("source") == "box")}


class DatasetWriter:
    """The output folder: per-image files written atomically (the JSON last: its presence marks the
    image done) and summary.json, which a re-run continues (resume)."""

    def __init__(self, out: str, a: argparse.Namespace):
        os.makedirs(out, exist_ok=True)
        self.out = out
        self.path = os.path.join(out, "summary.json")
        self.summary = {"input": a.input, "images": {}, "skipped": {}, "settings": vars(a)}
        if os.path.exists(self.path):
            with open(self.path) as f:
                old = json.load(f)
            self.summary["images"], self.summary["skipped"] = old.get("images", {}), old.get("skipped", {})
        self.done_before = len(self.summary["images"])

    def json_path(self, name: str) -> str:
        return os.path.join(self.out, f"{name}.json")

    def is_done(self, name: str) -> bool:
        """True when the image's JSON exists (then its summary entry is there too, recovered from the
        JSON when an earlier run stopped between the two)."""
        if not os.path.exists(self.json_path(name)):
            return False
        if name not in self.summary["images"]:
            with open(self.json_path(name), "rb") as f:
                self.summary["images"][name] = summary_entry(f.read())
        return True

    def write_image(self, name: str, jpg: bytes, record_json: bytes) -> Dict[str, int]:
        """The image's files; returns its summary entry (for `add`)."""
        _atomic_write(os.path.join(self.out, f"{name}.jpg"), jpg)
        _atomic_write(self.json_path(name), record_json)
        return summary_entry(record_json)

    def add(self, name: str, entry: Dict[str, int]) -> None:
        self.summary["images"][name] = entry

    def skip(self, name: str, error: str) -> None:
        self.summary["skipped"][name] = error
        print(f"skipped {name}: {error}", file=sys.stderr)

    def save(self, final: bool = False) -> None:
        if final:
            self.summary["total_masks"] = sum(v["masks"] for v in self.summary["images"].values())
        _atomic_write(self.path, json.dumps(self.summary, indent=1).encode())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="folder of images, video file, or ROS 2 bag")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=float, default=0.0, help="frames per second to sample (video/bag; 0 = all)")
    ap.add_argument("--topic", default="", help="image topic of a bag")
    ap.add_argument("--detections", help="COCO JSON with boxes per image (semi-automatic stage)")
    ap.add_argument("--overlap", type=float, default=0.5, help="drop an automatic mask this much covered by prompted ones")
    ap.add_argument("--checkpoint", default="")
    ap.add_argument("--variant", default="")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default here, --worker-cpus on Ray); float sums depend "
                         "on it, so byte-identical outputs need the same number")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--pred-iou-thresh", type=float, default=0.88)
    ap.add_argument("--stability-thresh", type=float, default=0.95)
    ap.add_argument("--crop-layers", type=int, default=0)
    ap.add_argument("--min-region-area", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="stop after this many new images (0 = all)")
    ap.add_argument("--no-progress", action="store_true")
    r = ap.add_argument_group("Ray (pip install 'sam_ros[ray]')")
    r.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="label on Ray: a cluster's address (e.g. ray://head:10001 or auto), or none for a local Ray")
    r.add_argument("--workers", type=int, default=0,
                   help="model-holding actors (0: one per GPU with --device cuda, else one per --worker-cpus CPUs)")
    r.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs each actor reserves (and its torch threads)")
    r.add_argument("--worker-gpus", type=float, default=1.0, help="GPUs each actor reserves with --device cuda")
    r.add_argument("--max-restarts", type=int, default=3,
                   help="times a dead actor is replaced (its unfinished images are redone) before its slot is dropped")
    return ap


def run_local(a: argparse.Namespace, writer: DatasetWriter, frames) -> Tuple[int, Dict[str, object]]:
    """Label in this process, one image after the other. Returns (new images, extra figures for the
    final report line)."""
    import torch

    threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        return _label_each(a, writer, frames)
    finally:
        torch.set_num_threads(threads)


def _label_each(a: argparse.Namespace, writer: DatasetWriter, frames) -> Tuple[int, Dict[str, object]]:
    t0 = time.time()
    predictor = create_predictor(a.checkpoint, a.variant, a.device, a.dtype)
    generator = make_generator(predictor, a)
    extra = {"startup_seconds": round(time.time() - t0, 2)}
    detections = load_detections_json(a.detections) if a.detections else {}
    new = 0
    for frame in frames:
        if writer.is_done(frame.name):
            continue  # resume: already done
        if frame.image is None:
            writer.skip(frame.name, frame.error)
            continue
        jpg, record_json = label_image(frame.name, frame.image, predictor, generator,
                                       detections.get(frame.name, []), a.overlap)
        entry = writer.write_image(frame.name, jpg, record_json)
        writer.add(frame.name, entry)
        new += 1
        frames.set_postfix(masks=entry["masks"])
        writer.save()
        if a.limit and new >= a.limit:
            break
    return new, extra


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from tqdm import tqdm

    if a.ray is not None:
        from . import data_engine_ray

        if not data_engine_ray.ray_available():
            print(data_engine_ray.MISSING_RAY, file=sys.stderr)
            return 2
    writer = DatasetWriter(a.out, a)
    t0 = time.time()
    # On Ray a folder's images are decoded by the actors (the driver only reads the files).
    frames = tqdm(open_source(a.input, a.rate, a.topic, decode=a.ray is None), disable=a.no_progress,
                  desc="data engine", unit="img")
    try:
        if a.ray is None:
            new, extra = run_local(a, writer, frames)
        else:
            new, extra = data_engine_ray.run_on_ray(a, writer, frames)
    except (CheckpointError, EngineError) as e:  # no model, or no Ray worker could run: say why
        writer.save()  # what was written stays; a re-run resumes
        print(f"data engine: {e}", file=sys.stderr)
        return 1
    writer.save(final=True)
    summary = writer.summary
    print(json.dumps({"images": len(summary["images"]), "new": new, "resumed_from": writer.done_before,
                      "skipped": len(summary["skipped"]), "masks": summary["total_masks"],
                      "seconds": round(time.time() - t0, 1), **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
