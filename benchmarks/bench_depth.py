"""Added cost of 3D per target per frame (sam_ros.engine.depth) at 640x480, beside what a target
already costs: the mask decoder of the embedded default model for one box, in the same run.

A rendered tabletop (aligned 32FC1 depth with noise, 5 % holes and flying pixels, known
intrinsics); each object's true mask dilated by 2 px as a segmenter's would be. Per target:
erode, sample depth, MAD rejection, back-projection, centroid, PCA box, points decimated to
max_points; the conversion of the depth message (once per frame, not per target) is timed apart.
Masks larger than max_samples pixels are sampled on a grid (the "points" column shows it).
Goal (issue 15): at most 2 ms per target. Both sides single-threaded.

    python benchmarks/bench_depth.py [--reps 200] [--max-points 2000]
"""
import argparse
import os
import platform
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import median_time  # noqa: E402


def cpu_model() -> str:
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    extra = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    return f"{name} ({os.cpu_count()} cores; {' '.join(extra) or 'no AVX-512/AMX'})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--max-points", type=int, default=2000)
    a = ap.parse_args()
    import torch

    from sam_ros.data import depth_scenes
    from sam_ros.engine import depth as D
    from sam_ros.engine.factory import create_predictor

    torch.set_num_threads(1)  # both sides on one thread: on a shared machine 2 threads thrash
    cv2.setNumThreads(1)
    print(cpu_model(), f"torch {torch.__version__}, numpy {np.__version__}, opencv {cv2.__version__}")
    scene = depth_scenes.tabletop(noise_m=0.003, hole_fraction=0.05, flying_pixels=True, seed=1)
    frame = D.DepthFrame(D.depth_to_meters(scene.depth, scene.encoding), scene.intrinsics)
    masks = [cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) for m in scene.masks]
    D.pixel_rays(scene.intrinsics)  # the ray table is built once per camera, not per frame

    predictor = create_predictor()  # the embedded default model
    emb = predictor.encode(scene.image)
    box = np.array([[200.0, 150.0, 330.0, 260.0]])
    decoder = median_time(lambda: predictor.decode(emb, box=box, multimask_output=False), a.reps // 4, warmup=3)
    convert = median_time(lambda: D.depth_to_meters(scene.depth, scene.encoding), a.reps)
    print(f"decoder, 1 box (what a target costs today): {decoder * 1e3:.2f} ms")
    print(f"depth_to_meters, once per frame:             {convert * 1e3:.2f} ms")
    print("| target | mask px | points | 3D per target | / decoder |")
    print("|---|---|---|---|---|")
    for i, mask in enumerate(masks):
        t = median_time(lambda: D.object_from_mask(mask, frame, max_points=a.max_points), a.reps, warmup=3)
        out = D.object_from_mask(mask, frame, max_points=a.max_points)
        print(f"| {type(scene.objects[i]).__name__.lower()} {i} | {int(mask.sum())} | {out.n_inliers} | "
              f"{t * 1e3:.2f} ms | {t / decoder:.2f} |")
    big = depth_scenes.render([depth_scenes.Box(center=(0, 0, 0.6), size=(0.4, 0.3, 0.1))], seed=2)
    bframe = D.DepthFrame(D.depth_to_meters(big.depth, big.encoding), big.intrinsics)
    t = median_time(lambda: D.object_from_mask(big.masks[0], bframe, max_points=a.max_points), a.reps // 4)
    print(f"| large box (worst case) | {int(big.masks[0].sum())} | "
          f"{D.object_from_mask(big.masks[0], bframe).n_inliers} | {t * 1e3:.2f} ms | {t / decoder:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
