"""Loading and saving SAM and SAM 2 weights.

Reads the official checkpoints unchanged (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth``, MobileSAM's ``mobile_sam.pt``: plain state dicts with the prefixes
``image_encoder.``, ``prompt_encoder.``, ``mask_decoder.``; SAM 2 / 2.1's ``sam2*_hiera_*.pt``:
the state dict under ``model``, prefixes ``image_encoder.trunk.``, ``sam_mask_decoder.``,
``memory_attention.`` ...), our own safetensors files (which
carry their config in the metadata) and training checkpoints. Loading never unpickles code
(``weights_only=True``) and is strict; every failure names the file and what is wrong.
"""
import dataclasses
import os
import re
from typing import Dict, Optional, Tuple, Union

import torch

from .build import MODEL_CONFIGS, SamConfig, TinyViTConfig, ViTConfig, build_sam
from .sam import Sam
from .sam2.build import SAM2_CONFIGS, Sam2Config, build_sam2
from .sam2.checkpoint import Sam2LayoutError, infer_sam2_config, is_sam2_state_dict
from .sam2.sam2_base import SAM2

PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.", "sam_prompt_encoder.", "sam_mask_decoder.")
AnyConfig = Union[SamConfig, Sam2Config]
CONFIG_METADATA_KEY = "sam_ros_config"

StateDict = Dict[str, torch.Tensor]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def config_from_json(text: str) -> AnyConfig:
    """A stored config of either family."""
    return Sam2Config.from_json(text) if '"family": "sam2"' in text else SamConfig.from_json(text)


def read_state_dict(path: Union[str, os.PathLike]) -> Tuple[StateDict, Optional[AnyConfig]]:
    """Read a state dict (and the config stored with it, if any) from a .pth/.pt/.safetensors file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory, not a file: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    config = None
    if path.endswith(".safetensors"):
        try:
            from safetensors import safe_open
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                obj = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several types for bad files
            raise CheckpointError(f"cannot read safetensors file {path}: {e}") from e
        if CONFIG_METADATA_KEY in meta:
            config = config_from_json(meta[CONFIG_METADATA_KEY])
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(_describe_load_error(path, e)) from e
        if isinstance(obj, dict) and isinstance(obj.get("config"), str):
            config = config_from_json(obj["config"])
        # Training checkpoints and some re-saved files nest the weights.
        for key in ("model", "state_dict"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__})")
    if not any(k.startswith(PREFIXES) for k in obj):
        sample = ", ".join(list(obj)[:3])
        raise CheckpointError(
            f"{path} is not a SAM checkpoint: no key starts with {', '.join(PREFIXES)} (keys look like: {sample})"
        )
    return obj, config


def _describe_load_error(path: str, e: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    if "Weights only load failed" in text and "Unsupported global" in text:
        # weights_only refused: the file pickles Python objects (code), not just tensors.
        detail = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
        return (f"cannot read checkpoint {path}: it contains Python objects besides tensors, which are not "
                f"loaded for safety (weights_only=True): {detail}")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "Unsupported" in ln), lines[0] if lines else type(e).__name__)
    return (f"cannot read checkpoint {path}: not a PyTorch weights file, or truncated/corrupt "
            f"({type(e).__name__}: {detail[:200]})")


def infer_config(state_dict: StateDict) -> AnyConfig:
    """Work out the architecture (SAM or SAM 2) from the parameter names and shapes."""
    sd = state_dict
    if is_sam2_state_dict(sd):
        try:
            return infer_sam2_config(sd)
        except KeyError as e:
            raise CheckpointError(f"cannot work out the SAM 2 architecture: missing {e.args[0]}") from None
        except Sam2LayoutError as e:
            raise CheckpointError(f"cannot work out the SAM 2 architecture: {e}; pass the variant") from None
    try:
        decoder = dict(
            prompt_embed_dim=sd["mask_decoder.iou_token.weight"].shape[1],
            mask_in_chans=sd["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            decoder_depth=_count(sd, "mask_decoder.transformer.layers."),
            decoder_mlp_dim=sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            iou_head_hidden_dim=sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        )
        if "image_encoder.patch_embed.proj.weight" in sd:
            patch = sd["image_encoder.patch_embed.proj.weight"].shape[-1]
            grid = sd["image_encoder.pos_embed"].shape[1]
            embed_dim = sd["image_encoder.pos_embed"].shape[-1]
            depth = _count(sd, "image_encoder.blocks.")
            rel = [sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
            head_dim = rel[0].shape[1]
            global_idx = tuple(i for i, r in enumerate(rel) if r.shape[0] == 2 * grid - 1)
            windowed = [r.shape[0] for r in rel if r.shape[0] != 2 * grid - 1]
            window = (windowed[0] + 1) // 2 if windowed else 14
            encoder = ViTConfig(embed_dim, depth, embed_dim // head_dim, global_idx, window, patch)
            return SamConfig(encoder, img_size=grid * patch, **decoder)
        if "image_encoder.patch_embed.seq.0.c.weight" in sd:
            dims = [sd["image_encoder.layers.0.blocks.0.conv1.c.weight"].shape[1]]
            depths = [_count(sd, "image_encoder.layers.0.blocks.")]
            heads, windows = [1], [7]
            for i in (1, 2, 3):
                dims.append(sd[f"image_encoder.layers.{i}.blocks.0.attn.qkv.weight"].shape[1])
                depths.append(_count(sd, f"image_encoder.layers.{i}.blocks."))
                bias = sd[f"image_encoder.layers.{i}.blocks.0.attn.attention_biases"]
                heads.append(bias.shape[0])
                windows.append(int(round(bias.shape[1] ** 0.5)))
            head = sd.get("image_encoder.head.weight")
            encoder = TinyViTConfig(tuple(dims), tuple(depths), tuple(heads), tuple(windows),
                                    num_classes=head.shape[0] if head is not None else 0)
            config = SamConfig(encoder, img_size=1024, **decoder)
            # Stage 0 is convolutional: its heads/window are not in the weights. A registry
            # entry equal in everything else is the same architecture.
            for named in MODEL_CONFIGS.values():
                if isinstance(named.encoder, TinyViTConfig) and _same_tiny_vit(named, config):
                    return named
            return config
    except KeyError as e:
        raise CheckpointError(f"cannot work out the model architecture: missing {e.args[0]}") from None
    raise CheckpointError("cannot work out the model architecture: unknown image encoder (neither ViT nor TinyViT keys)")


def _same_tiny_vit(a: SamConfig, b: SamConfig) -> bool:
    ea, eb = a.encoder, b.encoder
    return (dataclasses.replace(a, encoder=None) == dataclasses.replace(b, encoder=None)
            and ea.embed_dims == eb.embed_dims and ea.depths == eb.depths and ea.num_classes == eb.num_classes
            and ea.num_heads[1:] == eb.num_heads[1:] and ea.window_sizes[1:] == eb.window_sizes[1:])


def config_name(config: AnyConfig) -> Optional[str]:
    """The registry name of a config, if it is one of the named sizes."""
    for name, cfg in {**MODEL_CONFIGS, **SAM2_CONFIGS}.items():
        if cfg == config:
            return name
    return None


def check_compatible(model: torch.nn.Module, state_dict: StateDict, source: str) -> None:
    """Raise CheckpointError naming missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def get_any_config(name: str) -> AnyConfig:
    """A registry entry of either family by name ("vit_b", "sam2.1_hiera_t", ...)."""
    if name in SAM2_CONFIGS:
        return SAM2_CONFIGS[name]
    if name in MODEL_CONFIGS:
        return MODEL_CONFIGS[name]
    raise ValueError(f"unknown model variant {name!r}; known: {', '.join(sorted({**MODEL_CONFIGS, **SAM2_CONFIGS}))}")


def build_model(config: AnyConfig) -> Union[Sam, SAM2]:
    """The builder of the config's family."""
    return build_sam2(config) if isinstance(config, Sam2Config) else build_sam(config)


def load_model(path: Union[str, os.PathLike], variant: Optional[str] = None) -> Union[Sam, SAM2]:
    """Build the model for a checkpoint and load its weights strictly.

    variant: a registry name ("vit_b", "vit_l", "vit_h", "vit_t", "sam2.1_hiera_t", ...); when
    None it comes from the file's stored config or is inferred from the state dict.
    """
    state_dict, stored = read_state_dict(path)
    if variant:
        config = get_any_config(variant)
        source = f"checkpoint {os.fspath(path)} (variant {variant})"
    else:
        source = f"checkpoint {os.fspath(path)}"
        try:
            config = stored or infer_config(state_dict)
        except CheckpointError as e:
            raise CheckpointError(f"{source}: {e}") from None
    model = build_model(config)
    check_compatible(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def save_safetensors(model: Union[Sam, SAM2], path: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None,
                     dtype: Optional[torch.dtype] = None) -> None:
    """Write the weights (with their config) as safetensors; `dtype` (e.g. torch.float16) stores
    floating-point tensors in that precision (they load back into the model's own dtype)."""
    from safetensors.torch import save_file

    meta = dict(metadata or {})
    meta[CONFIG_METADATA_KEY] = model.config.to_json()
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    save_file(tensors, os.fspath(path), metadata=meta)
    os.chmod(path, 0o644)


def _count(sd: StateDict, prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0
