"""Tracking benchmark: J (mean IoU over every frame of every target, frames not encoded included)
on scripted sequences with ground truth (sam_ros.data.tracking_scenes), side by side in one run:

  (a) main@0768d8b's tracker: re-prompts from the previous mask on encoded frames only (box targets
      follow a box clamped to +-10% per frame, click targets the mask's centre plus its logits);
      between encoded frames its last mask is held;
  (b) the streaming session's PromptTracker (optical flow between encoded frames, appearance checks,
      occlusion states, re-acquisition);
  (c) an oracle bound: the ground-truth box as the prompt on every encoded frame, held in between.

The camera runs at 30 Hz; which frames get encoded follows from this machine's measured encoder +
decoder time (a frame every ceil(ms / 33.3) frames, as the live pipeline's latest-frame-wins does),
or --every. Also reported: frames with a mask while the target was absent, re-acquisition delay
after each full occlusion / exit (frames from reappearing to the first re-acquired result; a target
that comes back less than 11 frames before the sequence ends and is not re-acquired by then is
reported apart: whether it would be within 10 frames cannot be told), and the tracking cost per
target per frame.

    python benchmarks/bench_tracking.py [--quick] [--sizes 480x640,720x1280] [--seeds N] [--every N] [--multi]
        [--scenarios translate,occlusion] [--checkpoint FILE [--encoder-dtype bf16 --decoder-dtype bf16]]

With a SAM 2 checkpoint (--checkpoint sam2.1_hiera_tiny.pt) the session tracks by SAM 2's memory
on encoded frames and by optical flow between them; (a) and (c) use the same model's image
predictor.
"""
import argparse
import math
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import cpu_description  # noqa: E402
from sam_ros.data.tracking_scenes import HELD_OUT_SEEDS, SCENARIOS, TrackingSequence  # noqa: E402
from sam_ros.engine.factory import create_predictor  # noqa: E402
from sam_ros.engine.mask_utils import farthest_from_boundary  # noqa: E402
from sam_ros.engine.prompts import Prompt  # noqa: E402
from sam_ros.engine.session import SessionConfig, StreamingSession  # noqa: E402


def iou(a, b):
    u = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / u if u else 1.0


def box_of(mask):
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    return np.array([x, y, x + w, y + h], np.float64)


def start_prompt(gt, kind):
    if kind == "box":
        return Prompt(box=box_of(gt), multimask=False)
    (x, y), _ = farthest_from_boundary(gt)
    return Prompt(np.array([[x, y]], np.float64), np.array([1]), multimask=True)


def run_main_tracker(pred, seq, t0, every, kind):
    """main@0768d8b's TargetTracker policy, on encoded frames only; the last mask is held between."""
    out, mask, low, box = [], None, None, None
    for t in range(t0, seq.num_frames):
        scene = seq.frame(t)
        if (t - t0) % every == 0:
            emb = pred.encode(scene.image)
            if t == t0:
                p = start_prompt(seq.target_mask(scene), kind)
                box = p.box
            elif kind == "box" and mask is not None and mask.any():
                n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
                main = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) if n > 1 else 0
                x0, y0, w, h = (int(v) for v in stats[main, :4])
                cx, cy = x0 + w / 2, y0 + h / 2
                pw, ph = box[2] - box[0], box[3] - box[1]
                w, h = np.clip(w * 1.2, 0.9 * pw, 1.1 * pw), np.clip(h * 1.2, 0.9 * ph, 1.1 * ph)
                H, W = mask.shape
                box = np.array([max(0.0, cx - w / 2), max(0.0, cy - h / 2), min(W, cx + w / 2), min(H, cy + h / 2)])
                p = Prompt(box=box, multimask=False)
            elif kind != "box" and mask is not None and mask.any():
                c = np.array(farthest_from_boundary(mask)[0], np.float64)
                p = Prompt(c[None], np.array([1]), None, low, multimask=False)
            # else: the previous prompt again
            r = pred.predict_prompts(emb, [p])[0]
            k = int(np.argmax(r.iou_predictions))
            mask = r.masks[k]
            low = r.low_res_logits[k][None] if mask.any() else None
        out.append((seq.target_mask(scene), mask if mask is not None and mask.any() else None, 0.0))
    return out


def run_session(pred, seq, t0, every, kind):
    s = StreamingSession(pred, SessionConfig(encode_every=every))
    scene = seq.frame(t0)
    s.step(scene.image, stamp=t0 / 30, encode=True)
    first = s.add_target("t", start_prompt(seq.target_mask(scene), kind))
    out = [(seq.target_mask(scene), first.mask, 0.0, first.state)]
    for t in range(t0 + 1, seq.num_frames):
        scene = seq.frame(t)
        r = s.step(scene.image, stamp=t / 30)
        o = r.objects[0] if r.objects else None
        out.append((seq.target_mask(scene), o.mask if o else None, r.track_ms, o.state if o else "ended"))
    return out


def run_oracle(pred, seq, t0, every, kind):
    out, held = [], None
    for t in range(t0, seq.num_frames):
        scene = seq.frame(t)
        gt = seq.target_mask(scene)
        if (t - t0) % every == 0:
            if gt is None:
                held = None
            else:
                emb = pred.encode(scene.image)
                held = pred.predict_prompts(emb, [Prompt(box=box_of(gt), multimask=False)])[0].masks[0]
        out.append((gt, held, 0.0))
    return out


def object_mask(scene, object_id, min_area_frac=0.002):
    idx = np.flatnonzero((scene.object_id == object_id) & (scene.level == 0))
    if len(idx) == 0 or np.count_nonzero(scene.masks[idx[0]]) < min_area_frac * scene.masks[idx[0]].size:
        return None
    return scene.masks[idx[0]]


def run_multi(pred, seq, every):
    """Every object in view on the first frame started as a box target in one session; per frame
    and target: IoU with its own object (absent: 1 without a mask, 0 with one), and an identity
    switch whenever a target's mask covers another object better than its own (IoU > 0.5 with it).
    Returns (J over targets and frames, switches, targets, tracking ms per target per frame)."""
    s = StreamingSession(pred, SessionConfig(encode_every=every))
    scene = seq.frame(0)
    s.step(scene.image, stamp=0.0, encode=True)
    ids = [int(o) for o in np.unique(scene.object_id[scene.level == 0]) if object_mask(scene, o) is not None]
    for o in ids:
        s.add_target(f"obj{o}", Prompt(box=box_of(object_mask(scene, o)), multimask=False))
    j, switches, cost = [], 0, []
    on_other = {o: False for o in ids}
    for t in range(1, seq.num_frames):
        scene = seq.frame(t)
        r = s.step(scene.image, stamp=t / 30)
        cost.append(r.track_ms / max(1, len(ids)))
        got = {o.target_id: o.mask for o in r.objects}
        truth = {o: object_mask(scene, o) for o in np.unique(scene.object_id[scene.level == 0])}
        for o in ids:
            m, gt = got.get(f"obj{o}"), truth.get(o)
            j.append((iou(m, gt) if m is not None else 0.0) if gt is not None else float(m is None))
            own = iou(m, gt) if m is not None and gt is not None else 0.0
            other = max((iou(m, g) for k, g in truth.items() if k != o and g is not None), default=0.0) \
                if m is not None else 0.0
            now_other = other > 0.5 and other > own
            switches += int(now_other and not on_other[o])
            on_other[o] = now_other
    return float(np.mean(j)), switches, len(ids), float(np.median(cost))


def score(frames):
    j = [(iou(m, gt) if m is not None else 0.0) if gt is not None else float(m is None) for gt, m, *_ in frames]
    fp = sum(1 for gt, m, *_ in frames if gt is None and m is not None)
    delays, absent = [], False
    for i, (gt, m, *rest) in enumerate(frames):
        if gt is None:
            absent = True
        elif absent:
            absent = False
            # frames until a result overlaps the target again (IoU > 0.3)
            k = next((k for k in range(i, len(frames)) if frames[k][1] is not None and frames[k][0] is not None
                      and iou(frames[k][1], frames[k][0]) > 0.3), None)
            # None: not yet re-acquired when the sequence ends less than 11 frames after it came
            # back, so "within 10 frames" cannot be judged (counted apart, not as a miss)
            delays.append(k - i if k is not None else math.inf if len(frames) - i > 10 else None)
    return float(np.mean(j)), fp, delays


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 640x480 only")
    ap.add_argument("--sizes", default="480x640,720x1280")
    ap.add_argument("--every", type=int, default=0, help="encode every n-th frame (0: from this machine's speed)")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=0, help="the first n held-out seeds (0: all; --quick: 2)")
    ap.add_argument("--multi", action="store_true", help="also: all objects of a sequence as targets at once "
                    "(identity switches), --multi-seeds seeds per scenario")
    ap.add_argument("--multi-only", action="store_true", help="only the several-targets runs")
    ap.add_argument("--multi-seeds", type=int, default=2, help="seeds per scenario of the several-targets runs")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of: " + ", ".join(SCENARIOS))
    ap.add_argument("--checkpoint", default="", help="model weights, SAM or SAM 2 (default: the embedded model)")
    ap.add_argument("--encoder-dtype", default="fp32")
    ap.add_argument("--decoder-dtype", default="")
    a = ap.parse_args(argv)
    scenarios = [v for v in a.scenarios.split(",") if v]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        ap.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    print(cpu_description(), flush=True)
    pred = create_predictor(a.checkpoint, encoder_dtype=a.encoder_dtype, decoder_dtype=a.decoder_dtype)
    print(f"model: {a.checkpoint or 'embedded default'} ({type(pred).__name__}, encoder {a.encoder_dtype}, "
          f"decoder {a.decoder_dtype or a.encoder_dtype})", flush=True)
    sizes = [tuple(int(v) for v in s.split("x")) for s in ("480x640" if a.quick else a.sizes).split(",")]
    seeds = HELD_OUT_SEEDS[:a.seeds or (2 if a.quick else len(HELD_OUT_SEEDS))]
    rows, multi, every_at = [], [], {}
    for h, w in sizes:
        every = a.every
        if not every:
            img = TrackingSequence("translate", seeds[0], h, w).frame(0).image
            emb = pred.encode(img)
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                emb = pred.encode(img)
                pred.predict_prompts(emb, [Prompt(box=[10, 10, 100, 100], multimask=False)])
                ts.append((time.perf_counter() - t) * 1000)
            every = max(1, math.ceil(np.median(ts) / (1000 / 30)))
            print(f"{w}x{h}: encoder+decoder {np.median(ts):.0f} ms -> one frame in {every} encoded at 30 Hz", flush=True)
        every_at[(h, w)] = every
        for scenario in scenarios if not a.multi_only else ():
            for seed in seeds:
                kind = "box" if seed % 2 == 0 else "click"
                seq = TrackingSequence(scenario, seed, h, w, num_frames=a.frames)
                t0 = seq.first_visible()
                res = {}
                for name, fn in (("main", run_main_tracker), ("session", run_session), ("oracle", run_oracle)):
                    frames = fn(pred, seq, t0, every, kind)
                    res[name] = score(frames)
                    if name == "session":
                        track = [f[2] for f in frames[1:]]
                    del frames   # (masks: kept for all 40 sequences they filled 24 GB)
                rows.append((f"{w}x{h}", scenario, seed, kind, res, float(np.median(track))))
                print(f"{w}x{h} {scenario:13s} {seed} {kind:5s} J main {res['main'][0]:.3f} session "
                      f"{res['session'][0]:.3f} oracle {res['oracle'][0]:.3f} | absent-with-mask "
                      f"{res['main'][1]}/{res['session'][1]}/{res['oracle'][1]} | reacq delays "
                      f"{res['session'][2]} | flow {np.median(track):.2f} ms", flush=True)
    if a.multi or a.multi_only:
        print("\nseveral targets at once: every object in view on frame 0 a box target", flush=True)
        for h, w in sizes:
            for scenario in scenarios:
                for seed in seeds[:a.multi_seeds]:
                    seq = TrackingSequence(scenario, seed, h, w, num_frames=a.frames)
                    jm, sw, n, cost = run_multi(pred, seq, every_at[(h, w)])
                    multi.append((f"{w}x{h}", jm, sw, n, cost))
                    print(f"{w}x{h} {scenario:13s} {seed} {n} targets: J {jm:.3f}, identity switches {sw}, "
                          f"tracking {cost:.2f} ms per target per frame", flush=True)
    print("\nsummary (mean over sequences)")
    for size in sorted({r[0] for r in rows}):
        rs = [r for r in rows if r[0] == size]
        jm, js, jo = (np.mean([r[4][k][0] for r in rs]) for k in ("main", "session", "oracle"))
        delays = [d for r in rs for d in r[4]["session"][2] if d is not None]
        within = sum(d <= 10 for d in delays)
        unjudged = sum(d is None for r in rs for d in r[4]["session"][2])
        print(f"  {size}: J main {jm:.3f}, session {js:.3f}, oracle {jo:.3f} (session / oracle {js / jo:.2f}); "
              f"re-acquired within 10 frames {within}/{len(delays)} (+{unjudged} back less than 11 frames before the "
              f"end, not yet re-acquired: not judged); frames with a mask while absent "
              f"{sum(r[4]['session'][1] for r in rs)} (main {sum(r[4]['main'][1] for r in rs)}); "
              f"flow per target per frame median {np.median([r[5] for r in rs]):.2f} ms")
    for size in sorted({m[0] for m in multi}):
        ms = [m for m in multi if m[0] == size]
        print(f"  {size}, several targets: {sum(m[3] for m in ms)} targets in {len(ms)} sequences, J "
              f"{np.mean([m[1] for m in ms]):.3f}, identity switches {sum(m[2] for m in ms)}, tracking "
              f"{np.median([m[4] for m in ms]):.2f} ms per target per frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
