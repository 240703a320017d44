"""The data engine: raw footage -> an SA-1B style dataset of masks.

    python -m sam_ros.tools.data_engine INPUT --out dataset/ [--rate 1] [--topic /camera/image_raw]
        [--detections dets.json] [--checkpoint sam_vit_b_01ec64.pth] [--points-per-side 32]

INPUT is a folder of images, a video file, or a ROS 2 bag (sqlite3 or MCAP, read with rosbags).
- fully automatic stage (always): automatic masks from a point grid;
- semi-automatic stage (with --detections, a COCO JSON of boxes per image): the boxes prompt the
  model first, then automatic masks fill in what they missed (an automatic mask is dropped when
  more than --overlap of it lies on prompted masks).
Output: per image `<name>.jpg` and `<name>.json` ({"image": {...}, "annotations": [...]} with COCO
RLE segmentation, bbox, area, predicted_iou, stability_score, point_coords, crop_box) and
`summary.json`. Re-running skips images whose JSON exists; an unreadable image or broken bag
message is logged and skipped, and nothing already written is lost (files are written atomically).
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
from ..engine.mask_utils import crop_to_rle, encode_rle, mask_to_rle, rle_to_mask


def _atomic_write(path: str, data: bytes) -> None:
    """Write a whole file or nothing (an interrupted run never leaves a half-written file)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def prompted_annotations(predictor, embedding, boxes: List[List[float]], size) -> Tuple[List[Dict[str, Any]], np.ndarray]:
    """Masks for detector boxes (single-mask output), as annotation records (segmentation as
    uncompressed RLE), and the H x W bool union of those masks. Works on the masks' crops: no
    full-frame array per box."""
    covered = np.zeros(size, bool)
    if not boxes:
        return [], covered
    pred = predictor.decode(embedding, box=np.asarray(boxes, dtype=np.float64), multimask_output=False)
    out = []
    for i, box in enumerate(boxes):
        crop = pred.crop(i, 0)
        if crop.bbox is None:
            continue
        x, y, w, h = crop.bbox
        covered[y : y + h, x : x + w] |= crop.mask
        # bbox with inclusive edges, as SAM's automatic masks (masks_to_boxes) give it.
        out.append({"segmentation": crop_to_rle(crop.mask, x, y, size), "area": crop.area, "bbox": [x, y, w - 1, h - 1],
                    "predicted_iou": float(pred.iou_predictions[i, 0]), "stability_score": float(pred.stability_scores[i, 0]),
                    "point_coords": [], "box_prompt": [float(v) for v in box],
                    "crop_box": [0, 0, size[1], size[0]], "source": "box"})
    return out, covered


def _coco_rle(segmentation: Any) -> Dict[str, Any]:
    """A generator record's segmentation (any output mode) -> COCO compressed RLE."""
    if not isinstance(segmentation, dict):
        segmentation = mask_to_rle(segmentation)
    return segmentation if isinstance(segmentation["counts"], str) else encode_rle(segmentation)


def process_image(name: str, image: np.ndarray, predictor, generator: AutomaticMaskGenerator,
                  boxes: List[List[float]], overlap: float) -> Dict[str, Any]:
    h, w = image.shape[:2]
    embedding = predictor.encode(image)
    anns, covered = prompted_annotations(predictor, embedding, boxes, (h, w))
    prompted = bool(anns)
    for rec in generator.generate(image, embedding=embedding):
        if anns and (prompted or overlap < 0):  # nothing is covered without box masks
            seg = rec["segmentation"]
            mask = rle_to_mask(seg) if isinstance(seg, dict) else seg
            if (mask & covered).sum() > overlap * rec["area"]:
                continue  # already annotated by a box prompt
        rec["source"] = "auto"
        anns.append(rec)
    records = []
    for i, a in enumerate(anns):
        rec = {k: v for k, v in a.items() if k != "segmentation"}
        rec.update({"id": i, "segmentation": _coco_rle(a["segmentation"])})
        records.append(rec)
    return {"image": {"image_id": name, "file_name": f"{name}.jpg", "height": h, "width": w}, "annotations": records}


def main(argv=None) -> int:
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
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--pred-iou-thresh", type=float, default=0.88)
    ap.add_argument("--stability-thresh", type=float, default=0.95)
    ap.add_argument("--crop-layers", type=int, default=0)
    ap.add_argument("--min-region-area", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="stop after this many new images (0 = all)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    from tqdm import tqdm

    os.makedirs(a.out, exist_ok=True)
    predictor = create_predictor(a.checkpoint, a.variant, a.device, a.dtype)
    generator = AutomaticMaskGenerator(predictor, points_per_side=a.points_per_side, points_per_batch=a.points_per_batch,
                                       pred_iou_thresh=a.pred_iou_thresh, stability_score_thresh=a.stability_thresh,
                                       crop_n_layers=a.crop_layers, min_mask_region_area=a.min_region_area,
                                       output_mode="uncompressed_rle")
    detections = load_detections_json(a.detections) if a.detections else {}
    summary_path = os.path.join(a.out, "summary.json")
    summary = {"input": a.input, "images": {}, "skipped": {}, "settings": vars(a)}
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            old = json.load(f)
        summary["images"], summary["skipped"] = old.get("images", {}), old.get("skipped", {})
    done_before = len(summary["images"])
    new = 0
    t0 = time.time()
    bar = tqdm(open_source(a.input, a.rate, a.topic), disable=a.no_progress, desc="data engine", unit="img")
    for frame in bar:
        json_path = os.path.join(a.out, f"{frame.name}.json")
        if os.path.exists(json_path):
            continue  # resume: already done
        if frame.image is None:
            summary["skipped"][frame.name] = frame.error
            print(f"skipped {frame.name}: {frame.error}", file=sys.stderr)
            continue
        record = process_image(frame.name, frame.image, predictor, generator, detections.get(frame.name, []), a.overlap)
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        _atomic_write(os.path.join(a.out, f"{frame.name}.jpg"), jpg.tobytes())
        _atomic_write(json_path, json.dumps(record).encode())  # last: its presence marks the image done
        n_box = sum(1 for r in record["annotations"] if r.get("source") == "box")
        summary["images"][frame.name] = {"masks": len(record["annotations"]), "box_masks": n_box}
        new += 1
        bar.set_postfix(masks=len(record["annotations"]))
        _atomic_write(summary_path, json.dumps(summary, indent=1).encode())
        if a.limit and new >= a.limit:
            break
    summary["total_masks"] = sum(v["masks"] for v in summary["images"].values())
    _atomic_write(summary_path, json.dumps(summary, indent=1).encode())
    print(json.dumps({"images": len(summary["images"]), "new": new, "resumed_from": done_before,
                      "skipped": len(summary["skipped"]), "masks": summary["total_masks"],
                      "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
