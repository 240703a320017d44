"""Every backend available on this machine, next to Meta's reference in the same run (CPU).

ViT-B with random weights (the same on every side; `--model vit_t`: MobileSAM against MobileSAM's
reference; `--model sam_ros_tiny`: the embedded default architecture, ratios against the first
row): encoder time per frame, decoder time for one point and for 16 boxes (prompt encoder + mask
decoder + upscaling to 480x640), and the peak memory of a process doing one frame with that
backend. Ratios are ours / reference fp32. The `auto` row's first frame includes its one-time
measurement (cached under the run's temporary cache dir).

    python benchmarks/bench_backends.py [--model vit_b] [--skip compile]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_time, print_machine  # noqa: E402

CASES = [("torch", "fp32"), ("torch", "bf16"), ("compile", "fp32"), ("compile", "bf16"), ("onnxruntime", "fp32"),
         ("auto", "-")]


def one_case(model_name: str, backend: str, dtype: str, cache: str) -> dict:
    from conftest import randomize_state_dict

    from sam_ros.engine.backends import make_predictor
    from sam_ros.model.build import build_sam

    torch.set_grad_enabled(False)
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    if backend == "reference":
        import reference

        sa = reference.mobile_sam() if model_name == "vit_t" else reference.segment_anything()
        m = sa.sam_model_registry[model_name]().eval()
        m.load_state_dict(randomize_state_dict(m.state_dict(), 0))
        p = sa.SamPredictor(m)
        from sam_ros.engine import transforms

        x = transforms.image_to_tensor(transforms.resize_longest_side(image, 1024))
        enc = median_time(lambda: p.set_torch_image(x, image.shape[:2]), 2)
        boxes = torch.as_tensor(p.transform.apply_boxes(_boxes(), image.shape[:2]), dtype=torch.float)
        one = median_time(lambda: p.predict(point_coords=np.array([[320.0, 240.0]]), point_labels=np.array([1])), 10)
        many = median_time(lambda: p.predict_torch(None, None, boxes, multimask_output=False), 3)
    else:
        m = build_sam(model_name)
        m.load_state_dict(randomize_state_dict(m.state_dict(), 0))
        t = time.perf_counter()
        p = make_predictor(m, backend=backend, encoder_dtype=dtype, cache_dir=cache)
        p.encode(image)  # builds / compiles / exports (auto: measures and chooses) on first use
        setup = time.perf_counter() - t
        choice = getattr(p, "auto_choice", None)
        enc = median_time(lambda: p.encode(image), 2)
        emb = p.encode(image)
        one = median_time(lambda: p.decode(emb, np.array([[320.0, 240.0]]), np.array([1])), 10)
        many = median_time(lambda: p.decode(emb, box=_boxes(), multimask_output=False), 3)
    out = {"encoder_s": enc, "one_point_s": one, "16_boxes_s": many,
           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if backend != "reference":
        out["first_frame_setup_s"] = setup
        if choice is not None:
            out["chose"] = f"{choice.backend} {choice.encoder_dtype}"
    return out


def _boxes():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 400, (16, 2))
    return np.concatenate([xy, xy + rng.uniform(40, 200, (16, 2))], 1).clip(0, 639)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--skip", nargs="*", default=[])
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:  # subprocess: one backend, so peak memory is its own
        backend, dtype, cache = a.case.split(",")
        print(json.dumps(one_case(a.model, backend, dtype, cache)))
        return 0
    print_machine()
    cache = tempfile.mkdtemp(prefix="sam_ros_bench_")
    results = {}
    # Meta's / MobileSAM's reference where one exists (not for our embedded default model).
    first = [("reference", "fp32")] if a.model != "sam_ros_tiny" else []
    for backend, dtype in first + [c for c in CASES if c[0] not in a.skip]:
        r = subprocess.run([sys.executable, __file__, "--model", a.model, "--case", f"{backend},{dtype},{cache}"],
                           capture_output=True, text=True, cwd=ROOT)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            print(f"{backend} {dtype}: failed\n{r.stderr[-2000:]}")
            continue
        res = results[(backend, dtype)] = json.loads(lines[-1])
        ref = results.get(("reference", "fp32")) or next(iter(results.values()))
        print(f"{a.model} {backend:11s} {dtype}{' -> ' + res['chose'] if 'chose' in res else ''}: encoder {res['encoder_s']:6.2f} s ({res['encoder_s'] / ref['encoder_s']:.2f}x) | "
              f"1 point {res['one_point_s'] * 1000:6.1f} ms ({res['one_point_s'] / ref['one_point_s']:.2f}x) | "
              f"16 boxes {res['16_boxes_s'] * 1000:7.1f} ms ({res['16_boxes_s'] / ref['16_boxes_s']:.2f}x) | "
              f"peak {res['peak_mb']:.0f} MB" + (f" | first frame incl. setup {res['first_frame_setup_s']:.0f} s"
                                                 if "first_frame_setup_s" in res else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
