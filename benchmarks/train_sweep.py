"""Compare training recipes at equal steps (how the default model's settings were chosen).

Runs several `sam_ros.tools.train` configurations side by side (one process each; on a GPU
machine they share the card) and prints each one's validation metrics on the reserved
validation scenes (never the evaluation seeds). Used on a lent GPU to pick the recipe that the
documented CPU command then trains.

    python benchmarks/train_sweep.py --device cuda --steps 3000 --out /tmp/sweep
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import print_machine  # noqa: E402

CONFIGS = {
    "lr5e-4": [],
    "lr1e-3": ["--lr", "1e-3"],
    "lr2e-3": ["--lr", "2e-3"],
    "lr1e-3_6img4p": ["--lr", "1e-3", "--batch-images", "6", "--prompts-per-image", "4"],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", default="/tmp/sweep")
    ap.add_argument("--only", nargs="*", help="subset of configuration names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=0, help="stop all runs after this many seconds")
    a = ap.parse_args()
    print_machine()
    # The default schedule (warm-up 100, single clicks for 400 steps, boxes ramped in over 400,
    # for 3000 steps) scaled to the sweep's length.
    scale = a.steps / 3000
    schedule = ["--warmup", str(max(10, int(100 * scale))), "--points-only-steps", str(int(400 * scale)),
                "--ramp-steps", str(int(400 * scale))]
    os.makedirs(a.out, exist_ok=True)
    procs = {}
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=str(a.threads), PYTHONUNBUFFERED="1")
    for name, extra in CONFIGS.items():
        if a.only and name not in a.only:
            continue
        cmd = [sys.executable, "-m", "sam_ros.tools.train", "--out", os.path.join(a.out, name), "--steps", str(a.steps),
               "--device", a.device, "--eval-every", str(a.steps // 3), "--eval-scenes", "32",
               "--checkpoint-every", str(a.steps), "--no-progress", "--threads", str(a.threads),
               "--export", os.path.join(a.out, f"{name}.safetensors")] + schedule + extra
        procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=open(os.path.join(a.out, f"{name}.log"), "w"),
                                       text=True, cwd=ROOT)
    t0 = time.time()
    results = {}
    for name, p in procs.items():
        try:
            p.communicate(timeout=max(1.0, a.timeout - (time.time() - t0)) if a.timeout else None)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
        # Every validation row the run logged (steps/3, 2*steps/3, steps): runs cut short by
        # the timeout are still compared at the steps they all reached.
        rows = []
        with open(os.path.join(a.out, f"{name}.log")) as f:
            for line in f:
                i = line.find('{"step"')
                if i >= 0:
                    rows.append(json.loads(line[i:]))
        results[name] = rows
        for r in rows:
            keep = {k[4:]: round(v, 3) for k, v in r.items() if k.startswith("val_miou") and k.count("_") <= 2}
            print(name, "step", r["step"], f"{r['elapsed_s']:.0f}s", json.dumps(keep), flush=True)
    print(f"sweep took {time.time() - t0:.0f} s")
    with open(os.path.join(a.out, "sweep.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
