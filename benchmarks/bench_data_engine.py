"""The data engine, local vs Ray (1 and 2 model-holding actors), same images and settings, in the
same run; and the driver's per-image costs at SA-1B's image size (for the cluster estimate in
benchmarks/README.md).

Images per second are counted once the model(s) are loaded (each run's report gives its
startup_seconds), so they compare labelling throughput, not start-up. The Ray runs use a local
Ray started here (num_cpus = this machine's cores); their JSON files are checked byte for byte
against the local run with the same torch thread count (--threads 1).

    python benchmarks/bench_data_engine.py [--images 8] [--height 480 --width 640] [--points-per-side 16]
"""
import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from timing import median_time  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
        flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    except (OSError, StopIteration):
        name, flags = platform.processor(), []
    ext = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name or 'unknown CPU'}, {os.cpu_count()} cores ({' '.join(ext) or 'no AVX-512/AMX'})"


def run(args, out):
    """One data engine run in this process; its report line (dict)."""
    from sam_ros.tools import data_engine

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        assert data_engine.main(args + ["--out", out, "--no-progress"]) == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def jsons(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)
            if n.endswith(".json") and n != "summary.json"}


def io_costs(h: int, w: int, reps: int = 5):
    """Per-image I/O at h x w outside the model (ms of this process's CPU time, median, so that a
    busy machine does not inflate them; each is single-threaded): on the driver, decoding the input
    JPEG, putting the RGB image into the object store and writing the output files (a 100-mask
    JSON); on the actor, encoding the output JPEG and one mask's RLE (SA-1B has ~100 per image)."""
    import cv2
    import numpy as np
    import ray

    from sam_ros.data.scenes import SceneSequence
    from sam_ros.engine.mask_utils import encode_rle, mask_to_rle
    from sam_ros.tools.data_engine import _atomic_write

    img = SceneSequence(5, height=h, width=w).frame(0).image
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = jpg.tobytes()
    yy, xx = np.mgrid[:h, :w]
    mask = (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 5) ** 2  # one object's mask, full size
    record = json.dumps({"annotations": [{"segmentation": {"counts": "x" * 2000}} for _ in range(100)]}).encode()
    cv2.setNumThreads(1)

    def cpu_ms(fn, n=reps):
        return 1e3 * median_time(fn, n, clock=time.process_time)

    with tempfile.TemporaryDirectory() as d:
        def write():
            _atomic_write(os.path.join(d, "a.jpg"), data)
            _atomic_write(os.path.join(d, "a.json"), record)
        return {
            "decode_jpeg_ms": cpu_ms(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)),
            "encode_jpeg_ms": cpu_ms(lambda: cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])),
            "ray_put_image_ms": cpu_ms(lambda: ray.put(img)),
            "ray_put_file_ms": cpu_ms(lambda: ray.put(data)),
            "rle_1_mask_ms": cpu_ms(lambda: encode_rle(mask_to_rle(mask)), 20),
            "write_files_ms": cpu_ms(write),
        }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--sa1b-size", default="1500x2250", help="image size (HxW) for the driver-side costs")
    a = ap.parse_args()
    import cv2
    import ray
    import torch

    from sam_ros.data.scenes import SceneSequence

    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; ray {ray.__version__}")
    settings = ["--points-per-side", str(a.points_per_side), "--pred-iou-thresh", "0.5", "--stability-thresh", "0.6"]
    tmp = tempfile.mkdtemp(prefix="bench_data_engine_")
    src = os.path.join(tmp, "images")
    os.makedirs(src)
    seq = SceneSequence(11, height=a.height, width=a.width)
    for i in range(a.images):
        cv2.imwrite(os.path.join(src, f"f{i:03d}.png"), cv2.cvtColor(seq.frame(3 * i).image, cv2.COLOR_RGB2BGR))
    ray.init(num_cpus=os.cpu_count(), object_store_memory=200 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    cases = [("local (torch default threads)", []),
             ("local, 1 thread", ["--threads", "1"]),
             ("Ray, 1 worker (1 CPU)", ["--ray", "--workers", "1"]),
             ("Ray, 2 workers (1 CPU each)", ["--ray", "--workers", "2"])]
    print(f"{a.images} images {a.height}x{a.width}, embedded default model, {a.points_per_side}x{a.points_per_side} points")
    results = {}
    for name, extra in cases:
        out = os.path.join(tmp, f"out{len(results)}")
        r = run([src] + settings + extra, out)
        rate = r["new"] / max(r["seconds"] - r["startup_seconds"], 1e-9)
        results[name] = (rate, out)
        print(f"  {name:32s} {rate:6.3f} img/s  (start-up {r['startup_seconds']:.1f} s, {r['masks']} masks)")
    base = results["local, 1 thread"][0]
    for name, (rate, _) in results.items():
        print(f"  {name:32s} {rate / base:5.2f}x local 1 thread")
    ref = jsons(results["local, 1 thread"][1])
    for name in ("Ray, 1 worker (1 CPU)", "Ray, 2 workers (1 CPU each)"):
        print(f"  {name}: JSON byte-identical to local 1 thread: {jsons(results[name][1]) == ref}")
    h, w = (int(v) for v in a.sa1b_size.split("x"))
    costs = io_costs(h, w)
    print(f"I/O per image at {h}x{w}: " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
