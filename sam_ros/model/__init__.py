"""Pure PyTorch SAM modules (no I/O, no ROS), checkpoint compatible with the official files."""
from .build import MODEL_CONFIGS, SamConfig, TinyViTConfig, ViTConfig, build_sam, get_config
from .checkpoint import CheckpointError, load_model, read_state_dict, save_safetensors
from .sam import Sam

__all__ = ["MODEL_CONFIGS", "SamConfig", "TinyViTConfig", "ViTConfig", "build_sam", "get_config",
           "CheckpointError", "load_model", "read_state_dict", "save_safetensors", "Sam"]
