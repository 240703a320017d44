"""Model configurations and the builder.

Model sizes differ only by numbers: one config type per encoder family and a registry of named
sizes (``vit_b``, ``vit_l``, ``vit_h``, MobileSAM's ``vit_t``, and our embedded default).
"""
import dataclasses
import json
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, Tuple, Union

from torch import nn

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer


@dataclass(frozen=True)
class ViTConfig:
    """SAM's ViT image encoder."""
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    patch_size: int = 16
    mlp_ratio: float = 4.0
    family: str = field(default="vit", init=False)


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM's TinyViT image encoder."""
    embed_dims: Tuple[int, ...] = (64, 128, 160, 320)
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: Tuple[int, ...] = (7, 7, 14, 7)
    num_classes: int = 1000
    family: str = field(default="tiny_vit", init=False)


EncoderConfig = Union[ViTConfig, TinyViTConfig]


@dataclass(frozen=True)
class SamConfig:
    """Everything needed to build a SAM model (no weights)."""
    encoder: EncoderConfig
    img_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (ViT: one cell per patch; TinyViT: img_size / 16)."""
        patch = self.encoder.patch_size if isinstance(self.encoder, ViTConfig) else 16
        return self.img_size // patch

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        return json.dumps(d, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "SamConfig":
        d = json.loads(text)
        enc = dict(d.pop("encoder"))
        family = enc.pop("family")
        enc = {k: tuple(v) if isinstance(v, list) else v for k, v in enc.items()}
        encoder = ViTConfig(**enc) if family == "vit" else TinyViTConfig(**enc)
        return SamConfig(encoder=encoder, **d)


MODEL_CONFIGS: Dict[str, SamConfig] = {
    "vit_b": SamConfig(ViTConfig(768, 12, 12, (2, 5, 8, 11))),
    "vit_l": SamConfig(ViTConfig(1024, 24, 16, (5, 11, 17, 23))),
    "vit_h": SamConfig(ViTConfig(1280, 32, 16, (7, 15, 23, 31))),
    "vit_t": SamConfig(TinyViTConfig()),
    # The embedded default (sam_ros/weights/): a small TinyViT at 384 px input (24 x 24
    # embedding, 96 x 96 low-res masks) with SAM's standard prompt encoder and mask decoder.
    "sam_ros_tiny": SamConfig(
        TinyViTConfig(embed_dims=(32, 64, 128, 160), depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 5),
                      window_sizes=(8, 8, 12, 12), num_classes=0),
        img_size=384,
    ),
}


def get_config(name: str) -> SamConfig:
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model variant {name!r}; known: {', '.join(sorted(MODEL_CONFIGS))}") from None


def build_sam(config: Union[str, SamConfig]) -> Sam:
    """Build an (untrained, eval-mode) SAM model from a registry name or a config."""
    cfg = get_config(config) if isinstance(config, str) else config
    enc = cfg.encoder
    if isinstance(enc, ViTConfig):
        image_encoder: nn.Module = ImageEncoderViT(
            img_size=cfg.img_size,
            patch_size=enc.patch_size,
            embed_dim=enc.embed_dim,
            depth=enc.depth,
            num_heads=enc.num_heads,
            mlp_ratio=enc.mlp_ratio,
            out_chans=cfg.prompt_embed_dim,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=enc.window_size,
            global_attn_indexes=enc.global_attn_indexes,
        )
    else:
        image_encoder = TinyViT(
            img_size=cfg.img_size,
            num_classes=enc.num_classes,
            embed_dims=enc.embed_dims,
            depths=enc.depths,
            num_heads=enc.num_heads,
            window_sizes=enc.window_sizes,
            out_chans=cfg.prompt_embed_dim,
        )
    grid = cfg.embedding_size
    sam = Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(cfg.img_size, cfg.img_size),
            mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=cfg.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim,
                num_heads=cfg.decoder_heads,
            ),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
    )
    sam.config = cfg
    return sam.eval()
