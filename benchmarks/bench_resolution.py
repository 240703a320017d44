"""Decoding cost against the camera's resolution: full-frame masks vs masks computed in their regions.

The embedded default model on the CPU, one procedural scene rendered at 640x480, 1280x720 and
1920x1080 (the same scene, so the masks cover the same part of each frame), 16 boxes (single
mask each; the same boxes relative to the frame) and 1 point (multimask). Per call: prompt
encoder + mask decoder + masks on the host.

- full frame (the path before issue 16): every mask upsampled to H x W, thresholded there, and
  the stability score counted there (``decode_torch``, then to numpy, as ``decode`` did);
- regions: ``decode`` now: each mask upsampled only inside its region, kept as a crop, plus the
  node's use of each crop (``pred.crop``);
- regions + ``.masks``: the same, then the full-frame arrays made from the crops (what a caller
  that still reads ``pred.masks`` pays).

The three are timed interleaved, call after call, in one process (this machine is shared and
noisy: read the ratios). Masks are checked to be identical first.

    python benchmarks/bench_resolution.py [--reps 15] [--threads 2]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import cpu_description  # noqa: E402

SIZES = [(480, 640), (720, 1280), (1080, 1920)]


def boxes_for(h: int, w: int) -> np.ndarray:
    """16 boxes on a 4 x 4 grid, each a fifth of the frame wide and high (relative, so the same at
    every resolution)."""
    out = []
    for i in range(4):
        for j in range(4):
            x0, y0 = (0.02 + 0.24 * j) * w, (0.02 + 0.24 * i) * h
            out.append([x0, y0, x0 + 0.2 * w, y0 + 0.2 * h])
    return np.array(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    from sam_ros.data import scenes
    from sam_ros.engine import transforms
    from sam_ros.engine.factory import create_predictor

    p = create_predictor("")
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: embedded default (input {p.img_size}, low-res {p.low_res_size}); median of {a.reps} "
          "interleaved calls each\n")

    def full_frame(emb, boxes=None, points=None, multimask=False):
        size = emb.original_size
        kw = {}
        if boxes is not None:
            kw["boxes"] = torch.as_tensor(transforms.apply_boxes(boxes, size, p.img_size), dtype=torch.float32)
        if points is not None:
            kw["point_coords"] = torch.as_tensor(transforms.apply_coords(points, size, p.img_size)[None],
                                                 dtype=torch.float32)
            kw["point_labels"] = torch.ones(1, len(points), dtype=torch.int64)
        out = p.decode_torch(emb, multimask_output=multimask, **kw)
        return [t.cpu().numpy() for t in out]

    def regions(emb, boxes=None, points=None, multimask=False, materialise=False):
        pred = p.decode(emb, point_coords=None if points is None else points[None],
                        point_labels=None if points is None else np.ones((1, len(points))), box=boxes,
                        multimask_output=multimask)
        for b in range(pred.iou_predictions.shape[0]):
            for m in range(pred.iou_predictions.shape[1]):
                pred.crop(b, m)
        if materialise:
            pred.masks
        return pred

    rows = []
    for h, w in SIZES:
        image = scenes.generate_scene(5, height=h, width=w).image
        emb = p.encode(image)
        cases = {"16 boxes": dict(boxes=boxes_for(h, w)),
                 "1 point": dict(points=np.array([[0.45 * w, 0.55 * h]]), multimask=True)}
        for name, kw in cases.items():
            ref = full_frame(emb, **kw)
            new = regions(emb, **kw)
            assert np.array_equal(new.masks, ref[0]) and np.array_equal(new.stability_scores, ref[3]), name
            fns = [lambda: full_frame(emb, **kw), lambda: regions(emb, **kw),
                   lambda: regions(emb, materialise=True, **kw)]
            times = [[] for _ in fns]
            for fn in fns:
                fn()  # warm-up
            for _ in range(a.reps):
                for k, fn in enumerate(fns):
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
            med = [statistics.median(t) * 1000 for t in times]
            area = float(np.mean([new.crop(b, m).area for b in range(new.iou_predictions.shape[0])
                                  for m in range(new.iou_predictions.shape[1])])) / (h * w)
            rows.append((name, f"{w}x{h}", *med, area))
            print(f"{name:8s} {w}x{h}: full frame {med[0]:7.1f} ms | regions {med[1]:6.1f} ms "
                  f"({med[1] / med[0]:.2f}x) | regions + .masks {med[2]:6.1f} ms  (mean mask area {100 * area:.1f}% "
                  "of the frame)")
    print("\n| case | size | full frame | regions (crops) | ratio | regions + `.masks` |")
    print("|---|---|---|---|---|---|")
    for name, size, full, reg, mat, _ in rows:
        print(f"| {name} | {size} | {full:.1f} ms | {reg:.1f} ms | {reg / full:.2f} | {mat:.1f} ms |")
    for name in ("16 boxes", "1 point"):
        r = [row for row in rows if row[0] == name]
        print(f"{name}: 1920x1080 / 640x480 = {r[-1][2] / r[0][2]:.2f} full frame, {r[-1][3] / r[0][3]:.2f} regions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
