"""Build a ready predictor from user-facing settings (model variant, checkpoint, device, dtypes,
backend). The node, the demo and every command-line tool go through here."""
import logging
import os
from typing import Optional, Union

import torch

from ..model.build import build_sam
from ..model.checkpoint import CheckpointError, load_model
from ..model.sam import Sam
from ..model.sam2.sam2_base import SAM2
from .predictor import SamPredictor

log = logging.getLogger("sam_ros")

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
DEFAULT_VARIANT = "sam_ros_tiny"
DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "sam_ros_tiny.safetensors")


def default_weights() -> Optional[str]:
    """The embedded default model's weights, if this installation has them."""
    return DEFAULT_WEIGHTS if os.path.exists(DEFAULT_WEIGHTS) else None


def load_sam(checkpoint: str = "", variant: str = "") -> Union[Sam, SAM2]:
    """The model for a checkpoint, SAM or SAM 2 (variant inferred unless given); with neither,
    the embedded default. Raises CheckpointError naming the file and the problem."""
    if checkpoint:
        return load_model(os.path.expanduser(checkpoint), variant or None)
    if variant and variant != DEFAULT_VARIANT:
        raise CheckpointError(f"model variant {variant!r} needs a checkpoint file (official weights cannot be bundled)")
    weights = default_weights()
    if weights is None:
        log.warning("embedded default weights not found at %s: using RANDOM weights (masks are meaningless)",
                    DEFAULT_WEIGHTS)
        torch.manual_seed(0)
        model = build_sam(DEFAULT_VARIANT)
        model.random_weights = True
        return model
    return load_model(weights)


def create_predictor(checkpoint: str = "", variant: str = "", device: str = "cpu", encoder_dtype: str = "fp32",
                     decoder_dtype: str = "", backend: str = "torch", cache_dir: str = "") -> SamPredictor:
    """Load the model and wrap it in a predictor running on the chosen backend (`auto`, the
    node's default: the fastest that agrees with eager fp32 here, measured on first use and
    cached; a named backend forces that one with encoder_dtype). A SAM 2 checkpoint gives a
    Sam2Predictor (same API; eager torch)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
    model = load_sam(checkpoint, variant)
    from .backends import make_predictor  # noqa: WPS433 (backends import heavy optional packages lazily)

    if backend == "auto":
        decoder_dtype = decoder_dtype or "fp32"
    return make_predictor(model, backend=backend, device=device, encoder_dtype=encoder_dtype,
                          decoder_dtype=decoder_dtype or encoder_dtype, cache_dir=cache_dir)
