"""Memory and time of the streaming session over a long run: 8 targets tracked on every frame
of a moving synthetic scene, the model encoding every n-th frame, for 10 000 frames. Prints the
process's resident memory (RSS, from /proc) and Python's traced allocations at checkpoints, and
the tracking cost per frame: both must stay flat (no growth with the number of frames).

    python benchmarks/bench_session_memory.py [--frames 10000] [--targets 8] [--every 30] [--size 480x640]
"""
import argparse
import os
import sys
import time
import tracemalloc

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import cpu_description  # noqa: E402
from sam_ros.data.scenes import SceneSequence  # noqa: E402
from sam_ros.engine.factory import create_predictor  # noqa: E402
from sam_ros.engine.prompts import Prompt  # noqa: E402
from sam_ros.engine.session import SessionConfig, StreamingSession  # noqa: E402
from sam_ros.engine.tracking.tracker import TrackingConfig  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--targets", type=int, default=8)
    ap.add_argument("--every", type=int, default=30, help="encode every n-th frame")
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--loop", type=int, default=300, help="frames rendered (played forwards and backwards)")
    a = ap.parse_args(argv)
    h, w = (int(v) for v in a.size.split("x"))
    print(cpu_description(), flush=True)
    # The first scene seed whose first frame shows all `targets` objects (an object hidden under
    # others on that frame cannot be started); targets never end (lost_s unbounded), so all of
    # them stay in the session for the whole run, whatever the scene does to them.
    for seed in range(11, 200):
        seq = SceneSequence(seed=seed, height=h, width=w, min_objects=a.targets, max_objects=a.targets,
                            object_area_range=(0.01, 0.05))
        first = seq.frame(0)
        if sum(1 for m, level in zip(first.masks, first.level) if level == 0 and m.sum() >= 500) >= a.targets:
            break
    frames = [seq.frame(t) for t in range(a.loop)]
    session = StreamingSession(create_predictor(), SessionConfig(encode_every=a.every,
                                                                 tracking=TrackingConfig(lost_s=float("inf"))))
    session.step(frames[0].image, stamp=0.0, encode=True)
    wholes = [m for m, level in zip(frames[0].masks, frames[0].level) if level == 0 and m.sum() >= 500]
    for i, m in enumerate(wholes[:a.targets]):
        x, y, bw, bh = cv2.boundingRect(m.view(np.uint8))
        session.add_target(f"t{i}", Prompt(box=[x, y, x + bw, y + bh], multimask=False))
    tracemalloc.start()
    base_rss, base_traced = rss_mib(), tracemalloc.get_traced_memory()[0] / 2 ** 20
    print(f"{len(session.targets())} targets (scene seed {seed}), {w}x{h}, encode every {a.every} frames; "
          f"start RSS {base_rss:.1f} MiB", flush=True)
    track_ms, t0 = [], time.perf_counter()
    checkpoints = sorted({a.frames // 10 * k for k in range(1, 11)} | {a.frames})
    for t in range(1, a.frames + 1):
        k = t % (2 * a.loop - 2)            # the scene plays forwards, then backwards (no jump)
        r = session.step(frames[k if k < a.loop else 2 * a.loop - 2 - k].image, stamp=t / 30)
        track_ms.append(r.track_ms)
        if t in checkpoints:
            traced = tracemalloc.get_traced_memory()[0] / 2 ** 20
            states = {}
            for o in r.objects:
                states[o.state] = states.get(o.state, 0) + 1
            print(f"frame {t:6d}: RSS {rss_mib():7.1f} MiB (+{rss_mib() - base_rss:5.1f}), traced "
                  f"{traced:6.1f} MiB (+{traced - base_traced:5.1f}); tracking median "
                  f"{np.median(track_ms[-500:]):.2f} ms/frame for {len(r.objects)} targets {states}; "
                  f"{(time.perf_counter() - t0) / t * 1000:.1f} ms/frame overall", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
