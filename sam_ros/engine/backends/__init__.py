"""Execution backends behind one interface: `make_predictor(model, backend=...)` returns a
SamPredictor whose image encoder (and, where it pays, prompt encoder + mask decoder) runs on that
backend. The node and the command-line tools pick one by name.

    auto         the default: the fastest of the others that passes a parity check on this
                 machine, measured once per (CPU, torch, weights, input size) and cached (auto.py);
                 for a SAM 2 model, eager torch fp32 (SAM 2 runs on `torch` only)
    torch        eager PyTorch on CPU or CUDA, precision per part (encoder / decoder); on a CPU a
                 TinyViT encoder is fused for inference (sam_ros.model.fusion)
    compile      torch.compile with a persistent cache directory (second start reuses it)
    onnxruntime  exported ONNX graphs in ONNX Runtime (CPU; CUDA / TensorRT providers when present)
    tensorrt     torch-tensorrt engines (Jetson / desktop NVIDIA GPUs), cached on disk

Optional packages (onnxruntime, torch_tensorrt) are imported only when their backend is asked
for; a missing one raises BackendUnavailable saying what to install.
"""
import hashlib
import os
from typing import Optional

import torch

from ..predictor import SamPredictor

BACKENDS = ("auto", "torch", "compile", "onnxruntime", "tensorrt")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


def default_cache_dir(cache_dir: str = "") -> str:
    path = cache_dir or os.environ.get("SAM_ROS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sam_ros")
    os.makedirs(path, exist_ok=True)
    return path


def weights_hash(model: torch.nn.Module) -> str:
    """A short, stable hash of the weights (engines and exports are cached under it)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fuse_for_inference(predictor: SamPredictor) -> SamPredictor:
    """On a CPU, fuse a TinyViT encoder's convolutions, BatchNorms and GELUs in place
    (sam_ros.model.fusion: same function, ~1.5x faster); other encoders are left as they are."""
    from ...model.fusion import fuse_tiny_vit
    from ...model.tiny_vit import TinyViT

    encoder = predictor.model.image_encoder
    if predictor.device.type == "cpu" and isinstance(encoder, TinyViT) and not getattr(encoder, "fused", False):
        fuse_tiny_vit(encoder)
    return predictor


def make_predictor(model, backend: str = "torch", device: str = "cpu", encoder_dtype: str = "fp32",
                   decoder_dtype: Optional[str] = None, cache_dir: str = "", try_compile: bool = False) -> SamPredictor:
    """A predictor for `model` on `backend`; its `backend_name` says which backend runs (with
    `auto`: the one chosen, and `auto_choice` why). With `auto` the encoder's precision is
    chosen too (encoder_dtype is ignored; the decoder keeps decoder_dtype, default fp32)."""
    from ...model.sam2.sam2_base import SAM2

    if isinstance(model, SAM2):
        # SAM 2 runs on eager torch only (no export or compiled path yet): `auto` means torch fp32.
        if backend not in ("torch", "auto"):
            raise BackendUnavailable(f"backend {backend!r} runs SAM 1 models only; SAM 2 models run on 'torch'")
        from ..sam2_predictor import Sam2Predictor

        if backend == "auto":
            encoder_dtype, decoder_dtype = "fp32", decoder_dtype or "fp32"
        predictor = Sam2Predictor(model, device=device, encoder_dtype=encoder_dtype,
                                  decoder_dtype=decoder_dtype or encoder_dtype)
        predictor.backend_name = "torch"
        return predictor
    if backend == "auto":
        from .auto import choose_backend

        choice, predictor = choose_backend(model, device=device, cache_dir=cache_dir,
                                           decoder_dtype=decoder_dtype or "fp32", try_compile=try_compile)
        if predictor is None:
            predictor = make_predictor(model, choice.backend, device, choice.encoder_dtype, choice.decoder_dtype,
                                       cache_dir)
        predictor.auto_choice = choice
        predictor.backend_name = choice.backend
        return predictor
    predictor = _make(model, backend, device, encoder_dtype, decoder_dtype or encoder_dtype, cache_dir)
    predictor.backend_name = backend
    return predictor


def _make(model, backend: str, device: str, encoder_dtype: str, decoder_dtype: str, cache_dir: str) -> SamPredictor:
    if backend == "torch":
        predictor = SamPredictor(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype)
        return fuse_for_inference(predictor)
    if backend == "compile":
        from .compile import CompiledPredictor

        return CompiledPredictor(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype,
                                 cache_dir=default_cache_dir(cache_dir))
    if backend == "onnxruntime":
        from .onnx import OnnxPredictor

        return OnnxPredictor(model, device=device, cache_dir=default_cache_dir(cache_dir))
    if backend == "tensorrt":
        from .tensorrt import TensorRTPredictor

        return TensorRTPredictor(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype,
                                 cache_dir=default_cache_dir(cache_dir))
    raise BackendUnavailable(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
