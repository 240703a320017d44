"""Evaluate a model on the held-out procedural scenes (or a COCO / SA-1B dataset's held-out part).

    python -m sam_ros.tools.evaluate                      # the embedded default model, 200 held-out scenes
    python -m sam_ros.tools.evaluate --checkpoint runs/default/checkpoint.pt --scenes 50
    python -m sam_ros.tools.evaluate --checkpoint mine.pth --dataset annotations.json --image-root images/

Prints a JSON line of metrics: 1-click mIoU (the IoU head's pick), oracle mIoU (best of 3),
box mIoU, mIoU after k interactive clicks, and how well predicted IoU tracks actual IoU, plus
frames per second of full frame-to-masks on 640x480 with one target.
"""
import argparse
import json
import sys
import time

import numpy as np

from ..data import scenes
from ..engine.factory import create_predictor
from ..training.evaluation import evaluate, evaluate_frame


def speed(predictor, frames: int = 20) -> dict:
    """Full frame-to-masks time on 640x480 with one target (encode + one click, multimask)."""
    seq = scenes.SceneSequence(3, height=480, width=640)
    images = [seq.frame(t).image for t in range(frames)]
    predictor.decode(predictor.encode(images[0]), np.array([[320.0, 240.0]]), np.array([1]))
    times = []
    for img in images:
        t = time.perf_counter()
        emb = predictor.encode(img)
        predictor.decode(emb, np.array([[320.0, 240.0]]), np.array([1]))
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return {"frame_to_masks_ms_median": round(med * 1000, 1), "fps": round(1.0 / med, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="", help="weights (default: the embedded model)")
    ap.add_argument("--variant", default="")
    ap.add_argument("--scenes", type=int, default=len(scenes.EVAL_SEEDS), help="how many held-out scenes")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--dataset", help="COCO instances JSON / SA-1B folder: evaluate its held-out part instead")
    ap.add_argument("--image-root")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--no-speed", action="store_true")
    a = ap.parse_args(argv)
    predictor = create_predictor(a.checkpoint, a.variant, a.device, a.dtype)
    if a.dataset:
        from ..training.datasets import MaskJsonDataset

        data = MaskJsonDataset(a.dataset, a.image_root, split="holdout")
        ious = [evaluate_frame(predictor, s.image, list(s.masks), max_clicks=1)["one_click"]
                for s in (data.sample(i) for i in range(len(data))) if len(s.masks)]
        metrics = {"images": len(ious), "miou_1click": float(np.concatenate(ious).mean()) if ious else float("nan")}
    else:
        def progress(i, n):
            print(f"\revaluating {i}/{n} scenes", end="", file=sys.stderr, flush=True)

        metrics = evaluate(predictor, scenes.EVAL_SEEDS[: a.scenes], max_clicks=a.clicks, progress=progress)
        print(file=sys.stderr)
    if not a.no_speed:
        metrics.update(speed(predictor))
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
