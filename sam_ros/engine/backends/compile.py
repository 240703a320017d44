"""The `compile` backend: torch.compile'd image encoder with a persistent on-disk cache.

Inductor's FX-graph and autotuning caches go to `<cache_dir>/inductor`, so a second start of the
node (same weights shapes, same torch) loads compiled kernels instead of compiling again. The
decoder stays eager: its shapes change with every prompt count, and it is small.
"""
import os

import torch

from ..predictor import SamPredictor
from . import BackendUnavailable


class CompiledPredictor(SamPredictor):
    def __init__(self, model, device="cpu", encoder_dtype="fp32", decoder_dtype=None, cache_dir: str = "",
                 mode: str = "default") -> None:
        if not hasattr(torch, "compile"):
            raise BackendUnavailable(f"torch {torch.__version__} has no torch.compile (needs torch >= 2.0)")
        inductor_dir = os.path.join(cache_dir, "inductor")
        os.makedirs(inductor_dir, exist_ok=True)
        # Inductor reads this on every cache access (and sets it to its default the first time
        # it finds it unset), so assign rather than setdefault. Process-wide.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_dir
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
        os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
        super().__init__(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype)
        self.cache_dir = inductor_dir
        # Static shape: the encoder always sees 1 x 3 x S x S.
        self._image_encoder = torch.compile(self.model.image_encoder, mode=mode, dynamic=False, fullgraph=False)
