"""SAM 2.1 hiera tiny on CPU, ours next to Meta's sam2 1.1.0, in the same run.

Both sides get the same random weights and the same 1024 x 1024 input. Reports medians of
alternating calls and the ratio ours / reference (these machines are noisy: compare ratios, not
seconds):
- the image encoder per frame (Hiera + FPN + the decoder's skip projections: ``forward_image``);
- the per-frame tracking cost of one object with a full memory bank (memory attention over 7
  spatial memories and 16 object pointers, SAM heads, memory encoder), the encoder excluded:
  our ``Sam2VideoTracker.track`` against the reference video predictor's single-frame step, ours
  in float32 (same arithmetic as the reference) and in bfloat16 (``decoder_dtype=bf16``);
- peak memory of a process that encodes one frame and tracks one object over 16 frames (a full
  memory bank).

    python benchmarks/bench_sam2.py            # about 5 minutes on 2 shared cores
    python benchmarks/bench_sam2.py --quick
"""
import argparse
import os
import statistics
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import interleaved_times, peak_memory_mb, print_machine  # noqa: E402

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def paired_medians(fn_ref, fn_ours, reps: int, warmup: int = 1):
    """Median wall times (s) of the two sides, their calls taking turns (timing.interleaved_times)."""
    times = interleaved_times({"ref": fn_ref, "ours": fn_ours}, reps, warmup)
    return statistics.median(times["ref"]["wall"]), statistics.median(times["ours"]["wall"])


def build_pair():
    import reference
    from sam_ros.model.sam2 import build_sam2

    ref = reference.build_sam2_reference(CONFIG, [], video=True).eval()
    ours = build_sam2("sam2.1_hiera_t")
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.02 if v.is_floating_point() else v)
          for k, v in ours.state_dict().items()}
    ref.load_state_dict(sd, strict=True)
    ours.load_state_dict(sd, strict=True)
    return ref, ours.eval()


def build_sam2_copy(model):
    from sam_ros.model.sam2 import build_sam2

    copy = build_sam2(model.config)
    copy.load_state_dict(model.state_dict(), strict=True)
    return copy.eval()


def reference_tracking_step(ref, image: torch.Tensor):
    """A reference inference state over one repeated frame, prompted on frame 0; returns a function
    tracking frame t (memory attention + heads + memory encoder on cached features)."""
    state = {"images": image.expand(64, -1, -1, -1), "num_frames": 64, "offload_video_to_cpu": False,
             "offload_state_to_cpu": False, "video_height": 1024, "video_width": 1024,
             "device": image.device, "storage_device": image.device, "point_inputs_per_obj": {},
             "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {}, "obj_id_to_idx": {},
             "obj_idx_to_id": {}, "obj_ids": [], "output_dict_per_obj": {}, "temp_output_dict_per_obj": {},
             "frames_tracked_per_obj": {}}
    from collections import OrderedDict

    state["obj_id_to_idx"], state["obj_idx_to_id"] = OrderedDict(), OrderedDict()
    ref._get_image_feature(state, 0, 1)
    cached = state["cached_features"][0]
    ref.add_new_points_or_box(state, 0, 1, points=np.array([[500.0, 500.0]]), labels=np.array([1]))
    ref.propagate_in_video_preflight(state)
    out_dict = state["output_dict_per_obj"][0]

    def step(t):
        state["cached_features"] = {t: cached}
        out, _ = ref._run_single_frame_inference(state, out_dict, t, 1, False, None, None, False, True)
        out_dict["non_cond_frame_outputs"][t] = out
        out_dict["non_cond_frame_outputs"].pop(t - 16, None)  # what the reference would keep using
    return step


def memory_probe(side: str) -> None:
    """Subprocess entry: encode one frame, track one object over 16 frames."""
    torch.set_grad_enabled(False)
    image = torch.from_numpy((np.random.default_rng(0).random((1024, 1024, 3)) * 255).astype(np.uint8))
    import reference
    from sam_ros.model.sam2 import build_sam2

    if side == "reference":
        ref = reference.build_sam2_reference(CONFIG, [], video=True).eval()
        x = ref_input(image)
        step = reference_tracking_step(ref, x)
        for t in range(1, 17):
            step(t)
    else:
        from sam_ros.engine.sam2_predictor import Sam2Predictor
        from sam_ros.engine.sam2_video import Sam2VideoTracker

        p = Sam2Predictor(build_sam2("sam2.1_hiera_t"))
        emb = p.encode(image.numpy())
        tracker = Sam2VideoTracker(p)
        tracker.add_object(1, emb, 0, points=np.array([[500.0, 500.0]]), labels=np.array([1]))
        for t in range(1, 17):
            tracker.track(emb, t)


def ref_input(image: torch.Tensor) -> torch.Tensor:
    from sam_ros.model.sam2.sam2_base import PIXEL_MEAN, PIXEL_STD

    x = image.permute(2, 0, 1)[None].float() / 255.0
    return (x - torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(PIXEL_STD).view(1, 3, 1, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-probe", choices=["reference", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory comparison")
    args = ap.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return 0
    if args.memory_only:
        report_memory()
        return 0
    torch.set_grad_enabled(False)
    print_machine()
    reps = 2 if args.quick else 3
    ref, ours = build_pair()

    def row(name, t_ref, t_ours, note=""):
        print(f"{name:48s} reference {t_ref * 1000:9.1f} ms   ours {t_ours * 1000:9.1f} ms   "
              f"ratio {t_ours / t_ref:5.2f} {note}", flush=True)

    x = torch.randn(1, 3, 1024, 1024)
    t_ref, t_ours = paired_medians(lambda: ref.forward_image(x), lambda: ours.forward_image(x), reps)
    err = (ref.forward_image(x)["vision_features"] - ours.forward_image(x)["vision_features"]).abs().max().item()
    row("hiera tiny encoder per frame, fp32", t_ref, t_ours, f"(max |diff| {err:.1e})")
    enc_bf16 = build_sam2_copy(ours).to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    t_ref, t_bf16 = paired_medians(lambda: ref.forward_image(x), lambda: enc_bf16.forward_image(xb), reps)
    rel = ((enc_bf16.forward_image(xb)["vision_features"].float() - ref.forward_image(x)["vision_features"]).abs().max()
           / ref.forward_image(x)["vision_features"].abs().max()).item()
    row("hiera tiny encoder per frame, bf16 (vs reference fp32)", t_ref, t_bf16, f"(max rel. diff {rel:.1e})")

    from sam_ros.engine.predictor import ImageEmbedding
    from sam_ros.engine.sam2_predictor import Sam2Predictor
    from sam_ros.engine.sam2_video import Sam2VideoTracker

    out = ours.forward_image(x)
    raw = out["vision_features"]
    emb = ImageEmbedding(raw + ours.no_mem_embed.view(1, -1, 1, 1), (1024, 1024), (1024, 1024),
                         high_res_features=tuple(out["backbone_fpn"][:2]), backbone_features=raw)
    tracker = Sam2VideoTracker(Sam2Predictor(ours))
    tracker.add_object(1, emb, 0, points=np.array([[500.0, 500.0]]), labels=np.array([1]))
    step_ref = reference_tracking_step(ref, x)
    frame = {"ours": 0, "ref": 0}

    def ours_step():
        frame["ours"] += 1
        tracker.track(emb, frame["ours"])

    def ref_step():
        frame["ref"] += 1
        step_ref(frame["ref"])

    for _ in range(16):  # fill both memory banks
        ours_step()
        ref_step()
    n = 5 if args.quick else 15
    t_ref, t_ours = paired_medians(ref_step, ours_step, n, 0)
    row("tracking per frame and object (full bank)", t_ref, t_ours, "(encoder excluded)")

    # The same tracking in bfloat16 (memory attention, memory encoder, decoder), on the same
    # features cast to bf16 as Sam2Predictor.encode does with decoder_dtype=bf16.
    p_bf16 = Sam2Predictor(build_sam2_copy(ours), decoder_dtype=torch.bfloat16)
    bf = torch.bfloat16
    emb_bf16 = ImageEmbedding((raw + ours.no_mem_embed.view(1, -1, 1, 1)).to(bf), (1024, 1024), (1024, 1024),
                              high_res_features=tuple(f.to(bf) for f in out["backbone_fpn"][:2]),
                              backbone_features=raw.to(bf))
    tracker_bf16 = Sam2VideoTracker(p_bf16)
    tracker_bf16.add_object(1, emb_bf16, 0, points=np.array([[500.0, 500.0]]), labels=np.array([1]))
    frame["bf16"] = 0

    def bf16_step():
        frame["bf16"] += 1
        tracker_bf16.track(emb_bf16, frame["bf16"])

    for _ in range(16):
        bf16_step()
    t_ref, t_bf16 = paired_medians(ref_step, bf16_step, n, 0)
    # (These weights put the object out of the frame: agreement with fp32 is tested where it is
    # present, tests/test_sam2_video.py::test_bf16_tracking_follows_fp32_tracking.)
    row("tracking per frame and object, bf16 (vs ref fp32)", t_ref, t_bf16, "(encoder excluded)")
    report_memory()
    return 0


def report_memory() -> None:
    mem = {side: peak_memory_mb(__file__, side, ROOT) for side in ("reference", "ours")}
    print(f"{'peak memory, 1 frame + 16 tracked frames':48s} reference {mem['reference']:9.0f} MB   "
          f"ours {mem['ours']:9.0f} MB   ratio {mem['ours'] / mem['reference']:5.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
