"""Execution backends behind one interface: `make_predictor(model, backend=...)` returns a
SamPredictor whose image encoder (and, where it pays, prompt encoder + mask decoder) runs on that
backend. The node and the command-line tools pick one by name.

    torch        eager PyTorch on CPU or CUDA, precision per part (encoder / decoder)
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

BACKENDS = ("torch", "compile", "onnxruntime", "tensorrt")


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


def make_predictor(model, backend: str = "torch", device: str = "cpu", encoder_dtype: str = "fp32",
                   decoder_dtype: Optional[str] = None, cache_dir: str = "") -> SamPredictor:
    decoder_dtype = decoder_dtype or encoder_dtype
    from ...model.sam2.sam2_base import SAM2

    if isinstance(model, SAM2):
        if backend != "torch":
            raise BackendUnavailable(f"backend {backend!r} runs SAM 1 models only; SAM 2 models run on 'torch'")
        from ..sam2_predictor import Sam2Predictor

        return Sam2Predictor(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype)
    if backend == "torch":
        return SamPredictor(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype)
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
