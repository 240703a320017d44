"""Model and predictor speed, ours next to Meta's reference `segment-anything`, in the same run.

Both sides get the same random ViT-B weights and the same preprocessed input. Reports medians and
the ratio ours / reference (these machines are noisy: compare ratios, not seconds). Peak memory is
measured in a fresh subprocess per side (its peak RSS over set_image + one prediction).

    python benchmarks/bench_model.py            # everything (about 4 minutes on 2 cores)
    python benchmarks/bench_model.py --quick    # fewer repetitions
    python benchmarks/bench_model.py --tinyvit [--threads 1]  # TinyViT encoders (see tinyvit_encoders)
"""
import argparse
import json
import os
import statistics
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import interleaved_times, median_time, peak_memory_mb, print_machine  # noqa: E402


def build_pair():
    import reference

    sa = reference.segment_anything()
    from sam_ros.model.build import build_sam

    ref = sa.sam_model_registry["vit_b"]().eval()
    torch.manual_seed(0)
    sd = {k: (torch.randn_like(v) * 0.02 if v.is_floating_point() else v) for k, v in ref.state_dict().items()}
    ref.load_state_dict(sd)
    ours = build_sam("vit_b")
    ours.load_state_dict(sd)
    return sa, ref, ours


def memory_probe(side: str) -> None:
    """Subprocess entry: a ViT-B predictor on a 480x640 frame, then print peak RSS (MB)."""
    import reference

    from sam_ros.engine import transforms

    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    tensor = transforms.image_to_tensor(transforms.resize_longest_side(image, 1024))
    if side == "reference":
        sa = reference.segment_anything()
        p = sa.SamPredictor(sa.sam_model_registry["vit_b"]().eval())
        p.set_torch_image(tensor, image.shape[:2])
        p.predict(point_coords=np.array([[320, 240]]), point_labels=np.array([1]))
    else:
        from sam_ros.engine.predictor import SamPredictor
        from sam_ros.model.build import build_sam

        p = SamPredictor(build_sam("vit_b"))
        p.set_torch_image(tensor, image.shape[:2])
        p.predict(point_coords=np.array([[320, 240]]), point_labels=np.array([1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-probe", choices=["reference", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory comparison")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--tinyvit", action="store_true", help="only the TinyViT encoders (default model, MobileSAM)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--reps", type=int, default=0, help="rounds for --tinyvit (default 15 / 5)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return 0
    print_machine()
    if args.tinyvit:
        tinyvit_encoders(args.reps)
        return 0
    if args.memory_only:
        report_memory([])
        return 0
    reps_enc = 1 if args.quick else 3
    reps_dec = 5 if args.quick else 20
    torch.set_grad_enabled(False)
    sa, ref, ours = build_pair()
    from sam_ros.engine import transforms
    from sam_ros.engine.predictor import SamPredictor

    rows = []

    def row(name, t_ref, t_ours, note=""):
        rows.append({"case": name, "reference_s": t_ref, "ours_s": t_ours, "ratio": t_ours / t_ref, "note": note})
        print(f"{name:44s} reference {t_ref * 1000:9.1f} ms   ours {t_ours * 1000:9.1f} ms   ratio {t_ours / t_ref:5.2f} {note}",
              flush=True)

    x = torch.randn(1, 3, 1024, 1024)
    t_ref32 = median_time(lambda: ref.image_encoder(x), reps_enc)
    t_ours32 = median_time(lambda: ours.image_encoder(x), reps_enc)
    err = (ref.image_encoder(x) - ours.image_encoder(x)).abs().max().item()
    row("ViT-B encoder fp32", t_ref32, t_ours32, f"(max |diff| {err:.1e})")
    ours_bf = SamPredictor(ours, encoder_dtype="bf16").model.image_encoder
    t_ours16 = median_time(lambda: ours_bf(x.to(torch.bfloat16)), reps_enc)
    row("ViT-B encoder bf16 (vs reference fp32)", t_ref32, t_ours16)
    ours.float()

    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    tensor = transforms.image_to_tensor(transforms.resize_longest_side(image, 1024))
    rp = sa.SamPredictor(ref)
    rp.set_torch_image(tensor, image.shape[:2])
    op = SamPredictor(ours)
    op.set_torch_image(tensor, image.shape[:2])
    pt, lb = np.array([[320.0, 240.0]]), np.array([1])
    row("1 point, decoder + postprocess, 480x640",
        median_time(lambda: rp.predict(point_coords=pt, point_labels=lb), reps_dec),
        median_time(lambda: op.predict(point_coords=pt, point_labels=lb), reps_dec), "(multimask)")
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 400, (16, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(40, 200, (16, 2))], 1).clip(0, 639)
    boxes_t = torch.as_tensor(rp.transform.apply_boxes(boxes, image.shape[:2]), dtype=torch.float)
    row("16 boxes, decoder + postprocess, 480x640",
        median_time(lambda: rp.predict_torch(None, None, boxes_t, multimask_output=False), max(3, reps_dec // 4)),
        median_time(lambda: op.predict(box=boxes, multimask_output=False), max(3, reps_dec // 4)), "(single mask each)")

    bp = SamPredictor(ours, encoder_dtype="fp32", decoder_dtype="bf16")
    bp.set_torch_image(tensor, image.shape[:2])
    row("1 point, bf16 decoder (vs reference fp32)",
        median_time(lambda: rp.predict(point_coords=pt, point_labels=lb), reps_dec),
        median_time(lambda: bp.predict(point_coords=pt, point_labels=lb), reps_dec), "(multimask)")
    row("16 boxes, bf16 decoder (vs reference fp32)",
        median_time(lambda: rp.predict_torch(None, None, boxes_t, multimask_output=False), max(3, reps_dec // 4)),
        median_time(lambda: bp.predict(box=boxes, multimask_output=False), max(3, reps_dec // 4)), "(single mask each)")
    ours.float()

    report_memory(rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _reference_tiny_vit(cfg, img_size):
    """MobileSAM's own TinyViT class with our config's numbers."""
    import reference

    reference.mobile_sam()
    from mobile_sam.modeling import TinyViT

    e = cfg.encoder
    return TinyViT(img_size=img_size, in_chans=3, num_classes=e.num_classes, embed_dims=list(e.embed_dims),
                   depths=list(e.depths), num_heads=list(e.num_heads), window_sizes=list(e.window_sizes),
                   mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, mbconv_expand_ratio=4.0, local_conv_size=3).eval()


def tinyvit_encoders(reps: int = 0) -> None:
    """The embedded default model's encoder (its shipped weights, 384 px: a 640x480 frame) and
    MobileSAM's (random weights, 1024 px): MobileSAM's reference TinyViT (vit_t), ours as plain modules
    (what SamPredictor and training run), ours fused for CPUs (what the torch backend runs on a
    CPU), and fused in bf16; interleaved rounds, medians; max |diff| against the reference."""
    import copy

    from conftest import randomize_state_dict

    from sam_ros.engine.factory import load_sam
    from sam_ros.model.build import build_sam, get_config
    from sam_ros.model.fusion import fuse_tiny_vit

    torch.set_grad_enabled(False)
    for name in ("sam_ros_tiny", "vit_t"):
        cfg = get_config(name)
        if name == "sam_ros_tiny":
            model = load_sam()
        else:
            model = build_sam(name)
            model.load_state_dict(randomize_state_dict(model.state_dict(), 0))
        ours = model.image_encoder.eval()
        fused = fuse_tiny_vit(copy.deepcopy(ours))
        fused_bf16 = fuse_tiny_vit(copy.deepcopy(ours).to(torch.bfloat16))
        x = torch.randn(1, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(0))
        xb = x.to(torch.bfloat16)
        fns = {"ours, plain modules": lambda: ours(x), "ours, fused (torch backend on CPU)": lambda: fused(x),
               "ours, fused, bf16": lambda: fused_bf16(xb)}
        baseline = "ours, plain modules"
        if name == "vit_t":
            # MobileSAM's TinyViT hard-codes MobileSAM's sizes (1024 px, a stride-1 last merge
            # for 320 channels): it is the reference for vit_t only.
            ref = _reference_tiny_vit(cfg, cfg.img_size)
            ref.load_state_dict(ours.state_dict())
            ref.eval()  # MobileSAM caches its attention biases in eval()
            fns = {"MobileSAM reference": lambda: ref(x), **fns}
            baseline = "MobileSAM reference"
        want = fns[baseline]()
        diffs = {k: (fn().float() - want).abs().max().item() for k, fn in fns.items() if k != baseline}
        times = interleaved_times(fns, reps or (15 if name == "sam_ros_tiny" else 5))
        ref_t = statistics.median(times[baseline]["wall"])
        print(f"{name} encoder, {cfg.img_size} px input (embedding |max| {want.abs().max().item():.2f}; "
              f"ratios and diffs against {baseline}):")
        # Alone: each candidate's calls back to back (as a node runs one model frame after
        # frame); taking turns with other models costs each some cache and thread warm-up.
        n_alone = reps or (15 if name == "sam_ros_tiny" else 5)
        alone = {k: median_time(fn, n_alone, warmup=2) for k, fn in fns.items()}
        for k, t in times.items():
            med, cpu = statistics.median(t["wall"]), statistics.median(t["cpu"])
            d = f", max |diff| {diffs[k]:.1e}" if k in diffs else ""
            print(f"  {k:36s} median {med * 1e3:8.1f} ms (min {min(t['wall']) * 1e3:8.1f}, CPU time {cpu * 1e3:8.1f}) "
                  f"ratio {med / ref_t:5.2f}{d} | alone {alone[k] * 1e3:8.1f} ms, ratio {alone[k] / alone[baseline]:5.2f}",
                  flush=True)
        if name == "sam_ros_tiny":
            node_encode_path(model, n_alone)


def node_encode_path(model, reps: int) -> None:
    """What the node runs per frame: the torch backend's predictor (fused on a CPU), a 640x480
    frame in (resize, normalise, encoder), alone, fp32 and bf16 encoders."""
    import copy

    from sam_ros.engine.backends import make_predictor
    from sam_ros.engine.backends.auto import probe_image

    image = probe_image(480, 640)
    for dt in ("fp32", "bf16"):
        p = make_predictor(copy.deepcopy(model), backend="torch", encoder_dtype=dt, decoder_dtype="fp32")
        t = median_time(lambda: p.encode(image), reps, warmup=3)
        print(f"  node's encode, 640x480 frame, torch backend, {dt} encoder: median {t * 1e3:6.1f} ms (alone)", flush=True)


def report_memory(rows) -> None:
    mem = {side: peak_memory_mb(__file__, side, ROOT) for side in ("reference", "ours")}
    print(f"{'peak memory, ViT-B predictor process':44s} reference {mem['reference']:9.0f} MB   ours {mem['ours']:9.0f} MB"
          f"   ratio {mem['ours'] / mem['reference']:5.2f}")
    rows.append({"case": "peak memory MB", "reference": mem["reference"], "ours": mem["ours"]})


if __name__ == "__main__":
    sys.exit(main())
