"""Box starts that land on one object: can the model be made to separate them?

Every object in view on a tracking sequence's first frame is given as a box (as the several-targets
benchmark starts them). Two starts whose masks overlap at IoU above `TrackingConfig.exclusive_iou`
hold one object; the tracker gives the shared pixels to the target they look more like
(`PromptTracker.separate_starts`) when the likeness differs by `separate_margin`, else leaves it.
For every such pair this script also asks the model again, per target, with its box and a
background point on the inmost pixel of the shared region (SAM-PT's negative point) and reports
what that gives: the re-decoded mask's IoU with the target's own object and its overlap with the
shared region.

    python benchmarks/start_conflicts.py [--size 480x640] [--seeds 7000,...,7007] [--scenarios pan,...]

Per pair: IoU of the two masks, likeness of the shared pixels to the rest of each mask, the object
the shared pixels belong to; per target: its start mask's IoU with its own object, and the
re-decode's (predicted IoU, IoU with its own object, IoU with the shared region). The summary counts
the pairs the margin leaves open and, of their targets whose start is not on their own object
(IoU < 0.5), how many the re-decode puts on it.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_tracking import box_of, iou, object_mask  # noqa: E402
from benchmarks.timing import cpu_description  # noqa: E402
from sam_ros.data.tracking_scenes import HELD_OUT_SEEDS, SCENARIOS, TrackingSequence  # noqa: E402
from sam_ros.engine.factory import create_predictor  # noqa: E402
from sam_ros.engine.mask_utils import farthest_from_boundary  # noqa: E402
from sam_ros.engine.prompts import Prompt  # noqa: E402
from sam_ros.engine.tracking.tracker import TrackingConfig, _likeness, _mask_iou  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="480x640", help="HxW")
    ap.add_argument("--seeds", default=",".join(str(s) for s in HELD_OUT_SEEDS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    cfg = TrackingConfig()
    pred = create_predictor()
    print(cpu_description())
    pairs = open_pairs = off = fixed = 0
    for seed in (int(s) for s in a.seeds.split(",")):
        for scenario in a.scenarios.split(","):
            scene = TrackingSequence(scenario, seed, h, w).frame(0)
            emb = pred.encode(scene.image)
            ids = [int(o) for o in np.unique(scene.object_id[scene.level == 0]) if object_mask(scene, o) is not None]
            gts = {o: object_mask(scene, o) for o in ids}
            boxes = {o: box_of(gts[o]) for o in ids}
            preds = pred.predict_prompts(emb, [Prompt(box=boxes[o], multimask=False) for o in ids])
            masks = {o: p.masks[int(np.argmax(p.iou_predictions))] for o, p in zip(ids, preds)}
            for i, ta in enumerate(ids):
                for tb in ids[i + 1:]:
                    if _mask_iou(masks[ta], masks[tb]) <= cfg.exclusive_iou:
                        continue
                    pairs += 1
                    shared = masks[ta] & masks[tb]
                    like = [_likeness(shared, masks[o] & ~shared, scene.image, emb) for o in (ta, tb)]
                    is_open = abs(like[0] - like[1]) < cfg.separate_margin
                    open_pairs += is_open
                    owner = max(ids, key=lambda o: iou(shared, gts[o]))
                    (px, py), _ = farthest_from_boundary(shared)
                    line = (f"{scenario} {seed} targets {ta},{tb}: mask IoU {_mask_iou(masks[ta], masks[tb]):.2f}, "
                            f"likeness {like[0]:.2f} / {like[1]:.2f}{' (open)' if is_open else ''}, shared pixels "
                            f"on object {owner}")
                    for o in (ta, tb):
                        p = pred.predict_prompts(emb, [Prompt(np.array([[px, py]], np.float64), np.array([0]),
                                                              box=boxes[o], multimask=False)])[0]
                        k = int(np.argmax(p.iou_predictions))
                        own, again = iou(masks[o], gts[o]), iou(p.masks[k], gts[o])
                        if is_open and own < 0.5:
                            off += 1
                            fixed += again >= 0.5
                        line += (f" | {o}: start {own:.2f}, with the point: pred {p.iou_predictions[k]:.2f}, "
                                 f"own {again:.2f}, shared {_mask_iou(p.masks[k], shared):.2f}")
                    print(line, flush=True)
    print(f"{pairs} start pairs on one object; {open_pairs} left open by the likeness margin; their targets "
          f"not on their own object: {off}, put on it by the background point: {fixed}")


if __name__ == "__main__":
    main()
