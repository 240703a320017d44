"""SAM 2 configurations and the builder.

Sizes differ only by numbers (the Hiera trunk's width, heads, blocks per stage, global-attention
blocks, window sizes and background position-embedding size); SAM 2.1 differs from 2.0 by three
switches of the object pointers and the no-object memory embedding. One config type and a
registry of the official configurations (``sam2.1_hiera_t`` ... ``sam2_hiera_l``).
"""
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Dict, Tuple, Union

from .hiera import Hiera
from .image_encoder import FpnNeck, ImageEncoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .sam2_base import SAM2


@dataclass(frozen=True)
class HieraConfig:
    embed_dim: int = 96
    num_heads: int = 1
    stages: Tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: Tuple[int, ...] = (5, 7, 9)
    window_spec: Tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: Tuple[int, int] = (7, 7)
    family: str = field(default="hiera", init=False)


@dataclass(frozen=True)
class Sam2Config:
    """Everything needed to build a SAM 2 model (no weights)."""
    encoder: HieraConfig
    version: str = "2.1"          # "2.0" or "2.1"
    image_size: int = 1024
    d_model: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    memory_attention_layers: int = 4
    family: str = field(default="sam2", init=False)

    @property
    def img_size(self) -> int:
        return self.image_size

    @property
    def embedding_size(self) -> int:
        return self.image_size // 16

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Sam2Config":
        d = json.loads(text)
        d.pop("family", None)
        enc = {k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("encoder").items() if k != "family"}
        return Sam2Config(encoder=HieraConfig(**enc), **d)


def _hiera(embed_dim, num_heads, stages, global_att, window_spec=(8, 4, 14, 7), bkg=(7, 7)) -> HieraConfig:
    return HieraConfig(embed_dim, num_heads, tuple(stages), tuple(global_att), tuple(window_spec), tuple(bkg))


_SIZES = {
    "hiera_t": _hiera(96, 1, (1, 2, 7, 2), (5, 7, 9)),
    "hiera_s": _hiera(96, 1, (1, 2, 11, 2), (7, 10, 13)),
    "hiera_b+": _hiera(112, 2, (2, 3, 16, 3), (12, 16, 20), bkg=(14, 14)),
    "hiera_l": _hiera(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8)),
}

SAM2_CONFIGS: Dict[str, Sam2Config] = {}
for _size, _enc in _SIZES.items():
    SAM2_CONFIGS[f"sam2.1_{_size}"] = Sam2Config(_enc, version="2.1")
    SAM2_CONFIGS[f"sam2_{_size}"] = Sam2Config(_enc, version="2.0")


def get_sam2_config(name: str) -> Sam2Config:
    try:
        return SAM2_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown SAM 2 variant {name!r}; known: {', '.join(sorted(SAM2_CONFIGS))}") from None


def build_sam2(config: Union[str, Sam2Config]) -> SAM2:
    """Build an (untrained, eval-mode) SAM 2 model from a registry name or a config."""
    cfg = get_sam2_config(config) if isinstance(config, str) else config
    if cfg.version not in ("2.0", "2.1"):
        raise ValueError(f"unknown SAM 2 version {cfg.version!r} (2.0 or 2.1)")
    enc = cfg.encoder
    trunk = Hiera(embed_dim=enc.embed_dim, num_heads=enc.num_heads, stages=enc.stages,
                  global_att_blocks=enc.global_att_blocks, window_spec=enc.window_spec,
                  window_pos_embed_bkg_spatial_size=enc.window_pos_embed_bkg_spatial_size)
    neck = FpnNeck(cfg.d_model, trunk.channel_list)
    v21 = cfg.version == "2.1"
    model = SAM2(
        ImageEncoder(trunk, neck, scalp=1),
        MemoryAttention(cfg.d_model, cfg.memory_attention_layers, kv_in_dim=cfg.mem_dim),
        MemoryEncoder(cfg.d_model, cfg.mem_dim),
        image_size=cfg.image_size,
        num_maskmem=cfg.num_maskmem,
        add_tpos_enc_to_obj_ptrs=v21,
        proj_tpos_enc_in_obj_ptrs=v21,
        use_signed_tpos_enc_to_obj_ptrs=v21,
        no_obj_embed_spatial=v21,
    )
    model.config = cfg
    return model.eval()
