"""SAM 2 (pure PyTorch, checkpoint compatible with Meta's sam2 files)."""
from .build import SAM2_CONFIGS, HieraConfig, Sam2Config, build_sam2, get_sam2_config
from .sam2_base import SAM2

__all__ = ["SAM2_CONFIGS", "HieraConfig", "Sam2Config", "build_sam2", "get_sam2_config", "SAM2"]
