"""Automatic mask generation, ours vs Meta's SamAutomaticMaskGenerator, same random ViT-B weights,
same 480x640 image, 32 x 32 points, in the same run.

Two filter settings: SAM's defaults (predicted IoU > 0.88, stability >= 0.95; with random
weights few masks pass) and permissive ones (0.0 / 0.5) so that many masks go through
upscaling, stability, NMS and RLE encoding, as with a trained model.

    python benchmarks/bench_automatic.py [--points-per-side 32]
"""
import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import print_machine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--model", default="vit_b")
    a = ap.parse_args()
    print_machine()
    import reference
    from conftest import randomize_state_dict, synthetic_image

    from sam_ros.engine.automatic import AutomaticMaskGenerator
    from sam_ros.engine.predictor import SamPredictor
    from sam_ros.model.build import build_sam

    sa = reference.segment_anything()
    ref = sa.sam_model_registry[a.model]().eval()
    sd = randomize_state_dict(ref.state_dict(), 0)
    ref.load_state_dict(sd)
    ours = build_sam(a.model)
    ours.load_state_dict(sd)
    image = synthetic_image(480, 640, seed=3)
    pred = SamPredictor(ours)
    torch.set_grad_enabled(False)
    for name, kw in (("SAM defaults (0.88 / 0.95)", dict(pred_iou_thresh=0.88, stability_score_thresh=0.95)),
                     ("permissive (0.0 / 0.5)", dict(pred_iou_thresh=0.0, stability_score_thresh=0.5))):
        gen_ref = sa.SamAutomaticMaskGenerator(ref, points_per_side=a.points_per_side, **kw)
        gen_ours = AutomaticMaskGenerator(pred, points_per_side=a.points_per_side, **kw)
        t = time.perf_counter()
        out_ref = gen_ref.generate(image)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        out_ours = gen_ours.generate(image)
        t_ours = time.perf_counter() - t
        # Decoder part alone: reuse the embedding (the encoder is benchmarked in bench_model.py).
        emb = pred.encode(image)
        t = time.perf_counter()
        gen_ours.generate(image, embedding=emb)
        t_dec = time.perf_counter() - t
        print(f"{a.model} {a.points_per_side}x{a.points_per_side}, {name}: reference {t_ref:.1f} s ({len(out_ref)} masks), "
              f"ours {t_ours:.1f} s ({len(out_ours)} masks), ratio {t_ours / t_ref:.2f}; "
              f"ours without the encoder pass {t_dec:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
