"""The SAM 2 model: image encoder (Hiera + FPN), SAM heads (prompt encoder, mask decoder with
object scores and high-res skips), memory encoder, memory attention and the object-pointer
parts, with the official checkpoints' parameter names.

This module holds the per-frame model math; which past frames a tracker keeps in memory is the
engine's business (``sam_ros/engine/sam2_video.py``).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..mask_decoder import MLP
from .image_encoder import ImageEncoder
from .mask_decoder import SAM2MaskDecoder, SAM2PromptEncoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .position_encoding import get_1d_sine_pe
from ..transformer import TwoWayTransformer

# ImageNet statistics on 0-1 RGB (SAM 2 normalises after scaling to [0, 1]).
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
# Mask logit written where the object is judged absent.
NO_OBJ_SCORE = -1024.0


def _token_mlp(dim: int, hidden: int, activation) -> nn.Module:
    """The two-way transformer's token MLP with SAM 2's parameter names (layers.0 / layers.1)."""
    return MLP(dim, hidden, dim, 2, activation=activation)


class SAM2HeadsOutput(dict):
    """Outputs of :meth:`SAM2.forward_sam_heads` (a dict so that fields read by name):
    low_res_multimasks B x M x 4h x 4w, high_res_multimasks B x M x S x S, ious B x M,
    low_res_masks / high_res_masks (the best of M) B x 1 x ..., obj_ptr B x C, object_score_logits B x 1."""


class SAM2(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoder,
        memory_attention: MemoryAttention,
        memory_encoder: MemoryEncoder,
        image_size: int = 1024,
        num_maskmem: int = 7,
        max_obj_ptrs_in_encoder: int = 16,
        add_tpos_enc_to_obj_ptrs: bool = True,
        proj_tpos_enc_in_obj_ptrs: bool = True,
        use_signed_tpos_enc_to_obj_ptrs: bool = True,
        no_obj_embed_spatial: bool = True,
        sigmoid_scale_for_mem_enc: float = 20.0,
        sigmoid_bias_for_mem_enc: float = -10.0,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.memory_attention = memory_attention
        self.memory_encoder = memory_encoder
        self.image_size = image_size
        self.hidden_dim = image_encoder.neck.d_model
        self.mem_dim = memory_encoder.out_proj.weight.shape[0] if hasattr(memory_encoder.out_proj, "weight") \
            else self.hidden_dim
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        self.add_tpos_enc_to_obj_ptrs = add_tpos_enc_to_obj_ptrs
        self.proj_tpos_enc_in_obj_ptrs = proj_tpos_enc_in_obj_ptrs
        self.use_signed_tpos_enc_to_obj_ptrs = use_signed_tpos_enc_to_obj_ptrs
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc

        c = self.hidden_dim
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim)) if no_obj_embed_spatial else None

        grid = image_size // 16
        self.sam_prompt_encoder = SAM2PromptEncoder(embed_dim=c, image_embedding_size=(grid, grid),
                                                    input_image_size=(image_size, image_size), mask_in_chans=16)
        self.sam_mask_decoder = SAM2MaskDecoder(
            transformer_dim=c,
            transformer=TwoWayTransformer(depth=2, embedding_dim=c, mlp_dim=2048, num_heads=8,
                                          mlp_block=_token_mlp),
        )
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.obj_ptr_tpos_proj = nn.Linear(c, self.mem_dim) if proj_tpos_enc_in_obj_ptrs else nn.Identity()
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.image_size

    # The SAM heads under the names the image predictor uses for every family.
    @property
    def prompt_encoder(self) -> SAM2PromptEncoder:
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self) -> SAM2MaskDecoder:
        return self.sam_mask_decoder

    # ---- image ----------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x h x w RGB in 0-255 -> B x 3 x S x S normalised model input (bilinear resize with
        antialiasing to the square input, as SAM 2's transforms; no aspect-preserving padding)."""
        x = x.float() / 255.0
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, (self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - self.pixel_mean) / self.pixel_std

    def forward_image(self, x: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
        """Normalised B x 3 x S x S -> the encoder's dict, with the two high-resolution levels of
        ``backbone_fpn`` already projected for the mask decoder (conv_s0 / conv_s1)."""
        out = self.image_encoder(x)
        fpn = list(out["backbone_fpn"])
        fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
        fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
        out["backbone_fpn"] = fpn
        return out

    # ---- SAM heads ------------------------------------------------------------------------
    def forward_sam_heads(self, backbone_features: torch.Tensor, point_coords: Optional[torch.Tensor] = None,
                          point_labels: Optional[torch.Tensor] = None, mask_inputs: Optional[torch.Tensor] = None,
                          high_res_features: Optional[List[torch.Tensor]] = None,
                          multimask_output: bool = False) -> SAM2HeadsOutput:
        """Prompt encoder + mask decoder on (memory-conditioned) features B x C x h x w.

        point_coords B x P x 2 in input-frame pixels with labels B x P (none: one padding point);
        mask_inputs B x 1 x H x W logits (resized to the prompt encoder's 4h x 4w if needed).
        Where the object score says "absent" the masks are NO_OBJ_SCORE and the pointer is
        no_obj_ptr.
        """
        b = backbone_features.shape[0]
        device = backbone_features.device
        if point_coords is None:
            point_coords = torch.zeros(b, 1, 2, device=device)
            point_labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        mask_prompt = None
        if mask_inputs is not None:
            size = self.sam_prompt_encoder.mask_input_size
            mask_prompt = mask_inputs if tuple(mask_inputs.shape[-2:]) == tuple(size) else F.interpolate(
                mask_inputs.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=mask_prompt)
        low, ious, tokens, obj_logits = self.sam_mask_decoder(
            backbone_features, self.sam_prompt_encoder.get_dense_pe().to(backbone_features.dtype), sparse, dense,
            multimask_output, high_res_features)
        present = obj_logits > 0
        low = torch.where(present[:, None, None], low, NO_OBJ_SCORE).float()
        high = F.interpolate(low, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        token = tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_best, high_best = low[rows, best].unsqueeze(1), high[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        else:
            low_best, high_best = low, high
        obj_ptr = self.obj_ptr_proj(token.to(self.no_obj_ptr.dtype))
        lam = present.float()
        obj_ptr = lam * obj_ptr + (1 - lam) * self.no_obj_ptr
        return SAM2HeadsOutput(low_res_multimasks=low, high_res_multimasks=high, ious=ious, low_res_masks=low_best,
                               high_res_masks=high_best, obj_ptr=obj_ptr, object_score_logits=obj_logits)

    def use_mask_as_output(self, backbone_features: torch.Tensor, high_res_features: Optional[List[torch.Tensor]],
                           mask_inputs: torch.Tensor) -> SAM2HeadsOutput:
        """A mask prompt (B x 1 x S x S, binary) taken as the output itself: logits +-10; the object
        pointer still comes from the SAM heads prompted with the downsampled mask."""
        scale, bias = 20.0, -10.0
        m = mask_inputs.float()
        high = m * scale + bias
        low = F.interpolate(high, size=(high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
                            align_corners=False, antialias=True)
        ious = m.new_ones(m.shape[0], 1)
        obj_ptr = self.forward_sam_heads(backbone_features, mask_inputs=self.mask_downsample(m),
                                         high_res_features=high_res_features)["obj_ptr"]
        lam = torch.any(m.flatten(1) > 0.0, dim=1)[..., None].float()
        obj_logits = scale * lam + bias
        obj_ptr = lam * obj_ptr + (1 - lam) * self.no_obj_ptr
        return SAM2HeadsOutput(low_res_multimasks=low, high_res_multimasks=high, ious=ious, low_res_masks=low,
                               high_res_masks=high, obj_ptr=obj_ptr, object_score_logits=obj_logits)

    # ---- memory ---------------------------------------------------------------------------
    def condition_on_memory(self, feats: torch.Tensor, pos: torch.Tensor,
                            memories: Sequence[Tuple[int, torch.Tensor, torch.Tensor]],
                            obj_ptrs: Sequence[Tuple[int, torch.Tensor]], max_ptr_distance: int) -> torch.Tensor:
        """Memory attention of the current frame against a memory bank.

        Args:
            feats / pos: B x C x h x w image embedding and its position encoding.
            memories: (t_pos, features B x C_mem x h x w, pos enc B x C_mem x h x w); t_pos 0 for
                conditioning frames, num_maskmem - k for the frame k steps back (k < num_maskmem).
            obj_ptrs: (signed frame distance, pointer B x C) pairs.
            max_ptr_distance: the normaliser of the pointers' temporal encoding.
        Returns:
            B x C x h x w memory-conditioned features.
        """
        b, c, h, w = feats.shape
        mem, mem_pos = [], []
        for t_pos, m, p in memories:
            mem.append(m.flatten(2).transpose(1, 2))
            mem_pos.append(p.flatten(2).transpose(1, 2) + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1].view(1, 1, -1))
        num_ptr_tokens = 0
        if obj_ptrs:
            dists = [d if self.use_signed_tpos_enc_to_obj_ptrs else abs(d) for d, _ in obj_ptrs]
            ptrs = torch.stack([p for _, p in obj_ptrs], dim=1)  # B x P x C
            if self.add_tpos_enc_to_obj_ptrs:
                tpos_dim = c if self.proj_tpos_enc_in_obj_ptrs else self.mem_dim
                t = torch.tensor(dists, dtype=torch.float32, device=feats.device)
                ptr_pos = self.obj_ptr_tpos_proj(get_1d_sine_pe(t / max_ptr_distance, dim=tpos_dim))
                ptr_pos = ptr_pos.unsqueeze(0).expand(b, -1, self.mem_dim)
            else:
                ptr_pos = ptrs.new_zeros(b, len(dists), self.mem_dim)
            if self.mem_dim < c:
                # Each C-wide pointer becomes C / mem_dim tokens.
                split = c // self.mem_dim
                ptrs = ptrs.reshape(b, -1, split, self.mem_dim).flatten(1, 2)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=1)
            mem.append(ptrs)
            mem_pos.append(ptr_pos)
            num_ptr_tokens = ptrs.shape[1]
        # The memory attention runs in its own precision (the predictor's decoder precision).
        dtype = self.memory_attention.norm.weight.dtype
        curr = feats.flatten(2).transpose(1, 2).to(dtype)
        curr_pos = pos.flatten(2).transpose(1, 2).to(dtype)
        mem = torch.cat([m.to(dtype) for m in mem], dim=1)
        mem_pos = torch.cat([p.to(dtype) for p in mem_pos], dim=1)
        out = self.memory_attention(curr, curr_pos, mem, mem_pos, num_ptr_tokens)
        return out.transpose(1, 2).reshape(b, c, h, w).to(feats.dtype)

    def encode_memory(self, feats: torch.Tensor, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor,
                      binarize: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """A frame's memory: feats B x C x h x w (the raw image embedding), high_res_masks B x 1 x S x S
        logits -> (features B x C_mem x h x w, position encoding B x C_mem x h x w). Masks are
        squashed (sigmoid, or binarized for masks from clicks), x20 - 10; absent objects get the
        no-object embedding."""
        m = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
        m = m * self.sigmoid_scale_for_mem_enc + self.sigmoid_bias_for_mem_enc
        dtype = self.memory_encoder.pix_feat_proj.weight.dtype
        out = self.memory_encoder(feats.to(dtype), m.to(dtype))
        features = out["vision_features"]
        if self.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logits > 0).float()
            features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return features, out["vision_pos_enc"][-1]
