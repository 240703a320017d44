"""Shared fixtures: reference/ours model pairs with identical random weights, test images.

Random weights are scaled so that activations stay O(1): a linear or convolution weight is
N(0, 1/fan_in), norm scales are 1 + N(0, 0.1^2), biases N(0, 0.02^2), BatchNorm running variances
lie in [0.5, 1.5]; mask logits span about -15..15 (see HYPERNETWORK_GAIN). The default
initialisation of a checkpoint-less model (zero relative-position tables, zero TinyViT attention
biases, unit norms) would multiply many code paths by zero, so that a parity test could not see
them; here every parameter and buffer that the checkpoints carry is random.
"""
import math
from functools import partial
from typing import Dict

import numpy as np
import pytest
import torch

import reference
from sam_ros.engine import transforms
from sam_ros.engine.predictor import SamPredictor
from sam_ros.model.build import SamConfig, ViTConfig, build_sam

StateDict = Dict[str, torch.Tensor]

# Reduced SAM ViT used by the fast parity tests: same code paths as ViT-B (windowed and global
# blocks, rel-pos tables, 64 x 64 embedding at img_size 1024, full-size decoder), 1/4 of the width.
VIT_SMALL = SamConfig(ViTConfig(embed_dim=192, depth=4, num_heads=4, global_attn_indexes=(1, 3), window_size=14))

# Tiny model for predictor behaviour tests: the real 1024 input frame, 64 x 64 embedding and
# 256 x 256 low-res masks, but a 2-block, 32-wide encoder so that an encode costs ~0.1 s.
VIT_TINY = SamConfig(ViTConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=14))

# The per-token hypernetwork's last layer is scaled up so that mask logits span about -15..15, the
# order of a trained SAM's (with gain 1 they stay within about +-2 and the stability score, whose
# offset is 1, is near 0 everywhere).
HYPERNETWORK_GAIN = 8.0

_CONV_TRANSPOSE_SUFFIXES = ("output_upscaling.0.weight", "output_upscaling.3.weight")
_EMBEDDING_SUFFIXES = ("iou_token.weight", "mask_tokens.weight", "not_a_point_embed.weight", "no_mask_embed.weight")


def randomize_state_dict(sd: StateDict, seed: int) -> StateDict:
    """A copy of sd with every floating tensor replaced by non-trivial random values."""
    g = torch.Generator().manual_seed(seed)
    out: StateDict = {}
    for k, v in sd.items():
        if not v.is_floating_point():  # BatchNorm's num_batches_tracked
            out[k] = v.clone()
            continue

        def rn(scale: float = 1.0) -> torch.Tensor:
            return torch.randn(v.shape, generator=g, dtype=torch.float32) * scale

        if k.endswith("running_var"):
            new = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            new = rn(0.1)
        elif k.endswith("positional_encoding_gaussian_matrix"):
            new = rn(1.0)
        elif k.endswith(".weight") and v.ndim == 1:  # LayerNorm / LayerNorm2d / BatchNorm scale
            new = 1.0 + rn(0.1)
        elif k.endswith(".bias") and v.ndim == 1:
            new = rn(0.02)
        elif "rel_pos_" in k:
            new = rn(0.1)
        elif k.endswith("attention_biases"):
            new = rn(0.5)
        elif k.endswith("pos_embed"):
            new = rn(0.1)
        elif k.endswith(_EMBEDDING_SUFFIXES) or ".point_embeddings." in k:
            new = rn(0.5)  # learned embeddings: output tokens, point types, no-mask
        elif v.ndim >= 2:
            fan_in = v.shape[0] * v[0, 0].numel() if k.endswith(_CONV_TRANSPOSE_SUFFIXES) else v[0].numel()
            new = rn(1.0 / math.sqrt(fan_in))
        else:
            new = rn(0.02)
        if ".output_hypernetworks_mlps." in k and ".layers.2." in k:
            new = new * HYPERNETWORK_GAIN
        out[k] = new.to(v.dtype)
    return out


def build_reference_vit(cfg: SamConfig):
    """Meta's SAM with a ViT encoder of the given config (segment_anything.modeling classes)."""
    reference.segment_anything()  # stand-ins first
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    enc = cfg.encoder
    grid = cfg.img_size // enc.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=enc.depth, embed_dim=enc.embed_dim, img_size=cfg.img_size, mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=enc.num_heads,
            patch_size=enc.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=list(enc.global_attn_indexes), window_size=enc.window_size,
            out_chans=cfg.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=cfg.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim,
                                          mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads),
            transformer_dim=cfg.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def build_reference_vit_t():
    ms = reference.mobile_sam()
    return ms.sam_model_registry["vit_t"]().eval()


def load_pair(ref: torch.nn.Module, ours: torch.nn.Module, seed: int) -> StateDict:
    """Fill the reference's state dict with random values and load it strictly into both."""
    sd = randomize_state_dict(ref.state_dict(), seed)
    ref.load_state_dict(sd, strict=True)
    ours.load_state_dict(sd, strict=True)
    # MobileSAM caches its attention biases (`ab`) when switched to eval mode: refresh them.
    ref.eval()
    ours.eval()
    return sd


def make_pair(family: str, seed: int = 0):
    """(reference model, our model, state dict) with identical random weights."""
    if family == "vit":
        ref, ours = build_reference_vit(VIT_SMALL), build_sam(VIT_SMALL)
    elif family == "vit_b":
        sa = reference.segment_anything()
        ref, ours = sa.sam_model_registry["vit_b"]().eval(), build_sam("vit_b")
    elif family == "tiny_vit":
        ref, ours = build_reference_vit_t(), build_sam("vit_t")
    else:
        raise ValueError(family)
    sd = load_pair(ref, ours, seed)
    return ref, ours, sd


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An H x W x 3 uint8 image with structure (gradients, rectangles, a disc) plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1), 128 + 0 * xx], axis=-1)
    for _ in range(4):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
    disc = (yy - h * 0.6) ** 2 + (xx - w * 0.4) ** 2 < (min(h, w) * 0.15) ** 2
    img[disc] = (250, 30, 60)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def set_same_image(ref_pred, our_pred: SamPredictor, image: np.ndarray) -> None:
    """Give both predictors the same resized tensor (our resize is not the reference's PIL one)."""
    tensor = transforms.image_to_tensor(transforms.resize_longest_side(image, our_pred.img_size))
    ref_pred.set_torch_image(tensor.clone(), image.shape[:2])
    our_pred.set_torch_image(tensor.clone(), image.shape[:2])


@pytest.fixture(scope="session")
def image_480x640() -> np.ndarray:
    return synthetic_image(480, 640, seed=1)


class PredictorPair:
    """Reference and our predictor over identical weights, with the same image set."""

    def __init__(self, family: str, image: np.ndarray, seed: int = 0):
        self.family = family
        self.ref_model, self.our_model, self.state_dict = make_pair(family, seed)
        mod = reference.mobile_sam() if family == "tiny_vit" else reference.segment_anything()
        self.ref = mod.SamPredictor(self.ref_model)
        self.ours = SamPredictor(self.our_model)
        self.image = image
        set_same_image(self.ref, self.ours, image)


@pytest.fixture(scope="session")
def predictor_pairs(image_480x640):
    """Lazily built PredictorPair per encoder family (one encoder forward per side each)."""
    cache: Dict[str, PredictorPair] = {}

    def get(family: str) -> PredictorPair:
        if family not in cache:
            cache[family] = PredictorPair(family, image_480x640)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def tiny_model():
    """Our tiny random model (see VIT_TINY); treat as read-only (predictors may share it)."""
    model = build_sam(VIT_TINY)
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed=3), strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model) -> SamPredictor:
    return SamPredictor(tiny_model)
