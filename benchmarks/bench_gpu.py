"""GPU timings (batch 1): encoders per backend and precision, the decoder for 16 boxes, and a
sustained 1080p stream with ViT-B, next to Meta's reference in the same run; SAM 2.1 hiera tiny:
the encoder per precision and the per-frame tracking of one object with a full memory bank (next
to Meta's sam2 where it is importable). Random weights. Run by benchmarks/gpu_check.sh; prints a
table with the card's name.

    python benchmarks/bench_gpu.py               # on a CUDA machine
    python benchmarks/bench_gpu.py --sam2-smoke  # the SAM 2 rows only, once each, on the CPU
                                                 # (checks the script, times nothing useful)
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import print_machine  # noqa: E402


def cuda_time(fn, reps=20, warmup=5) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def wall_time(fn, reps=1, warmup=0) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def sam2_rows(add, device: str = "cuda", timer=cuda_time, reps: int = 10, dtypes=("fp32", "fp16", "bf16")) -> None:
    """SAM 2.1 hiera tiny at 1024 px: encoder (forward_image) and one object tracked per frame with
    a full memory bank (7 spatial memories, 16 pointers), per precision; the reference's fp32
    encoder and tracking step where Meta's sam2 imports."""
    from bench_sam2 import CONFIG, reference_tracking_step
    from sam_ros.engine.predictor import ImageEmbedding
    from sam_ros.engine.sam2_predictor import Sam2Predictor
    from sam_ros.engine.sam2_video import Sam2VideoTracker
    from sam_ros.model.sam2 import build_sam2

    g = torch.Generator().manual_seed(0)
    base = build_sam2("sam2.1_hiera_t")
    sd = {k: (torch.randn(v.shape, generator=g) * 0.02 if v.is_floating_point() else v)
          for k, v in base.state_dict().items()}
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    x32 = torch.randn(1, 3, 1024, 1024, generator=g).to(device)
    try:
        import reference

        ref = reference.build_sam2_reference(CONFIG, [], video=True).eval().to(device)
        ref.load_state_dict(sd, strict=True)
        add("sam2.1_t", "ref", "fp32", "encoder", timer(lambda: ref.forward_image(x32), reps=reps, warmup=2))
        step = reference_tracking_step(ref, x32)
        frame = [0]

        def ref_step():
            frame[0] += 1
            step(frame[0])
        for _ in range(16):
            ref_step()
        add("sam2.1_t", "ref", "fp32", "track 1 object / frame", timer(ref_step, reps=reps, warmup=1))
        del ref, step
    except Exception as e:  # the reference is optional here
        print(f"sam2 reference not timed: {type(e).__name__}: {e}", flush=True)
    for name in dtypes:
        try:
            model = build_sam2("sam2.1_hiera_t")
            model.load_state_dict(sd, strict=True)
            p = Sam2Predictor(model.eval(), device=device, encoder_dtype=dt[name], decoder_dtype=dt[name])
            x = x32.to(dt[name])
            add("sam2.1_t", "torch", name, "encoder", timer(lambda: p.model.forward_image(x), reps=reps, warmup=2))
            out = p.model.forward_image(x)
            raw = out["vision_features"].to(dt[name])
            emb = ImageEmbedding(raw + p.model.no_mem_embed.view(1, -1, 1, 1).to(raw.dtype), (1024, 1024),
                                 (1024, 1024), high_res_features=tuple(f.to(dt[name]) for f in out["backbone_fpn"][:2]),
                                 backbone_features=raw)
            tracker = Sam2VideoTracker(p)
            tracker.add_object(1, emb, 0, points=np.array([[500.0, 500.0]]), labels=np.array([1]))
            frame = [0]

            def ours_step():
                frame[0] += 1
                tracker.track(emb, frame[0])
            for _ in range(16):
                ours_step()
            add("sam2.1_t", "torch", name, "track 1 object / frame", timer(ours_step, reps=reps, warmup=1))
            del p, tracker, emb, out
        except Exception as e:
            print(f"sam2.1_t torch {name}: failed: {type(e).__name__}: {e}", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> int:
    from sam_ros.engine.backends import make_predictor
    from sam_ros.model.build import build_sam

    if "--sam2-smoke" in sys.argv:
        torch.set_grad_enabled(False)
        print_machine()
        sam2_rows(lambda *r, note="": print(*r, note, flush=True), device="cpu", timer=wall_time, reps=1,
                  dtypes=("fp32", "bf16"))
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print_machine()
    name = torch.cuda.get_device_name()
    rows = []
    print(f"GPU: {name}; torch {torch.__version__}")

    def add(model, backend, dtype, what, ms, note=""):
        rows.append(dict(model=model, backend=backend, dtype=dtype, what=what, ms=round(ms, 3), note=note))
        print(f"{model:14s} {backend:8s} {dtype:5s} {what:28s} {ms:9.3f} ms {note}", flush=True)

    torch.set_grad_enabled(False)
    try:
        import reference  # noqa: F401  (needs the carried segment_anything wheel)
        sa = reference.segment_anything()
        ref_encoder = sa.sam_model_registry["vit_b"]().cuda().eval().image_encoder
        x = torch.randn(1, 3, 1024, 1024, device="cuda")
        add("vit_b", "ref", "fp32", "encoder", cuda_time(lambda: ref_encoder(x), reps=10))
        with torch.autocast("cuda", dtype=torch.float16):
            add("vit_b", "ref", "amp16", "encoder", cuda_time(lambda: ref_encoder(x), reps=10))
        ref_encoder = None
    except Exception as e:  # the reference is optional here
        print(f"reference not timed: {e}")

    image = (np.random.default_rng(0).random((1080, 1920, 3)) * 255).astype(np.uint8)
    boxes = np.array([[100 + 100 * i, 100 + 40 * i, 400 + 100 * i, 500 + 30 * i] for i in range(16)], dtype=np.float64)

    def run(model_name, backend, dtype):
        torch.manual_seed(0)
        try:
            p = make_predictor(build_sam(model_name), backend=backend, device="cuda", encoder_dtype=dtype)
            s = p.img_size
            x = torch.randn(1, 3, s, s, device="cuda", dtype=p.encoder_dtype)
            add(model_name, backend, dtype, "encoder", cuda_time(lambda: p._image_encoder(x), reps=20, warmup=3))
            emb = p.encode(image)
            bt = torch.as_tensor(boxes * (s / 1920), dtype=torch.float32, device="cuda")
            add(model_name, backend, dtype, "decoder 16 boxes (low-res)",
                cuda_time(lambda: p._decode_low_res(emb, None, None, bt, None)))
            add(model_name, backend, dtype, "16 boxes + 1080p masks",
                cuda_time(lambda: p.decode_torch(emb, boxes=bt, multimask_output=False)))
        except Exception as e:
            print(f"{model_name} {backend} {dtype}: failed: {type(e).__name__}: {e}", flush=True)
        torch.cuda.empty_cache()

    for model_name in ("vit_b", "vit_t", "sam_ros_tiny"):
        for dtype in ("fp32", "fp16", "bf16"):
            run(model_name, "torch", dtype)

    # Sustained 1080p stream, ViT-B fp16: host frame -> pinned upload -> resize -> encoder ->
    # one tracked box -> full-resolution mask on the host, frame after frame.
    p = make_predictor(build_sam("vit_b"), backend="torch", device="cuda", encoder_dtype="fp16")
    frames = [np.ascontiguousarray(np.roll(image, 13 * i, axis=1)) for i in range(8)]
    box = np.array([600.0, 300.0, 1200.0, 800.0])
    for f in frames[:3]:
        p.decode(p.encode(f), box=box, multimask_output=False)
    torch.cuda.synchronize()
    n = 60
    t = time.perf_counter()
    for i in range(n):
        p.decode(p.encode(frames[i % len(frames)]), box=box, multimask_output=False)
    fps = n / (time.perf_counter() - t)
    add("vit_b", "torch", "fp16", "1080p stream, 1 target", 1000 / fps, f"= {fps:.1f} fps sustained")
    del p
    torch.cuda.empty_cache()

    sam2_rows(add)

    # torch.compile last (compilation takes a while); ViT-B last of all.
    for model_name in ("sam_ros_tiny", "vit_t", "vit_b"):
        run(model_name, "compile", "fp16")
    with open(os.environ.get("GPU_BENCH_JSON", "/tmp/gpu_bench.json"), "w") as fjson:
        json.dump({"gpu": name, "torch": torch.__version__, "rows": rows}, fjson, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
