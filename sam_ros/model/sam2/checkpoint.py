"""Recognising SAM 2 state dicts (Meta's ``sam2*_hiera_*.pt`` files hold them under ``model``).

The weights show the trunk's width, blocks per stage (the first block of stages 2-4 has a
shortcut projection), background position-embedding size and first window, the memory sizes and
the version (2.1 adds ``obj_ptr_tpos_proj`` and ``no_obj_embed_spatial``). Heads, global-attention
blocks and the later windows change no shape: they come from the registry entry with the same
visible numbers.
"""
from typing import Dict

import torch

from .build import SAM2_CONFIGS, HieraConfig, Sam2Config

TRUNK = "image_encoder.trunk."
SAM2_MARKER = TRUNK + "patch_embed.proj.weight"


class Sam2LayoutError(ValueError):
    """The state dict is SAM 2's but its architecture cannot be worked out."""


def is_sam2_state_dict(sd: Dict[str, torch.Tensor]) -> bool:
    return SAM2_MARKER in sd or any(k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.", "memory_attention."))
                                    for k in sd)


def infer_sam2_config(sd: Dict[str, torch.Tensor]) -> Sam2Config:
    """The Sam2Config of a SAM 2 state dict; raises KeyError for a missing key, Sam2LayoutError for a
    trunk layout not in the registry."""
    embed_dim = sd[SAM2_MARKER].shape[0]
    bkg = tuple(sd[TRUNK + "pos_embed"].shape[2:])
    window0 = sd[TRUNK + "pos_embed_window"].shape[2]
    blocks = {int(k[len(TRUNK) + len("blocks."):].split(".")[0]) for k in sd if k.startswith(TRUNK + "blocks.")}
    depth = max(blocks) + 1 if blocks else 0
    starts = [0] + [i for i in range(depth) if f"{TRUNK}blocks.{i}.proj.weight" in sd] + [depth]
    stages = tuple(b - a for a, b in zip(starts[:-1], starts[1:]))
    version = "2.1" if "obj_ptr_tpos_proj.weight" in sd else "2.0"
    tpos = sd["maskmem_tpos_enc"]
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("memory_attention.layers.")}
    rest = dict(version=version, d_model=sd["no_mem_embed"].shape[-1], mem_dim=tpos.shape[-1],
                num_maskmem=tpos.shape[0], memory_attention_layers=max(layers) + 1 if layers else 0)
    for cfg in SAM2_CONFIGS.values():
        e = cfg.encoder
        if (e.embed_dim, e.stages, e.window_pos_embed_bkg_spatial_size, e.window_spec[0]) == (
                embed_dim, stages, bkg, window0):
            return Sam2Config(HieraConfig(e.embed_dim, e.num_heads, e.stages, e.global_att_blocks, e.window_spec,
                                          e.window_pos_embed_bkg_spatial_size), **rest)
    raise Sam2LayoutError(
        f"a SAM 2 Hiera trunk of width {embed_dim}, stages {list(stages)}, background embedding {list(bkg)} "
        f"is none of the official sizes (hiera_t, hiera_s, hiera_b+, hiera_l): its heads and global-attention "
        f"blocks cannot be read from the weights")
