"""SAM 2's prompt encoder and mask decoder: SAM's, plus

- prompt points may carry the box-corner labels 2 and 3 (SAM 2 feeds boxes as two points);
- an object-score token and head (is the object in the frame at all?);
- high-resolution skip connections: stride-4 and stride-8 encoder features (already projected by
  ``conv_s0`` / ``conv_s1``) are added inside the upscaling;
- IoU predictions through a sigmoid, and for single-mask output a fall back to the best
  multimask output when the single mask is unstable (``dynamic_multimask_via_stability``).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..mask_decoder import MLP, MaskDecoder
from ..prompt_encoder import PromptEncoder

LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


class SAM2PromptEncoder(PromptEncoder):
    """SAM's prompt encoder; point labels 2 / 3 are box corners (type embeddings 2 / 3)."""

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        emb = super()._embed_points(points, labels, pad)
        if pad:
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        labels = labels[..., None]
        emb = emb + (labels == LABEL_BOX_TOP_LEFT) * self.point_embeddings[2].weight.float()
        return emb + (labels == LABEL_BOX_BOTTOM_RIGHT) * self.point_embeddings[3].weight.float()


class SAM2MaskDecoder(MaskDecoder):
    def __init__(self, *, transformer_dim: int, transformer: nn.Module, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256, use_high_res_features: bool = True,
                 iou_prediction_use_sigmoid: bool = True, pred_obj_scores: bool = True,
                 pred_obj_scores_mlp: bool = True, use_multimask_token_for_obj_ptr: bool = True,
                 dynamic_multimask_via_stability: bool = True, dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98) -> None:
        super().__init__(transformer_dim=transformer_dim, transformer=transformer,
                         num_multimask_outputs=num_multimask_outputs, iou_head_depth=iou_head_depth,
                         iou_head_hidden_dim=iou_head_hidden_dim)
        self.iou_prediction_head.sigmoid_output = iou_prediction_use_sigmoid
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
            self.pred_obj_score_head = (MLP(transformer_dim, transformer_dim, 1, 3) if pred_obj_scores_mlp
                                        else nn.Linear(transformer_dim, 1))
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool,
                high_res_features: Optional[List[torch.Tensor]] = None):
        """
        Args:
            image_embeddings: Bi x C x h x w (Bi = B, or 1 shared by all prompts).
            image_pe: 1 x C x h x w.
            sparse_prompt_embeddings: B x N x C; dense_prompt_embeddings: B (or 1) x C x h x w.
            multimask_output: the 3 ambiguity masks, or one mask (token 0, or the best of the 3
                when token 0's mask is unstable).
            high_res_features: [Bi x C/8 x 4h x 4w, Bi x C/4 x 2h x 2w] (after conv_s0 / conv_s1).
        Returns:
            low-res logits B x M x 4h x 4w, IoU predictions B x M, the output tokens for the
            object pointer (B x M' x C) and object-score logits B x 1.
        """
        masks, iou, mask_tokens_out, obj_logits = self.predict_all(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res_features)
        if multimask_output:
            masks, iou = masks[:, 1:], iou[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou = self._dynamic_multimask_via_stability(masks, iou)
        else:
            masks, iou = masks[:, 0:1], iou[:, 0:1]
        tokens = mask_tokens_out[:, 1:] if multimask_output and self.use_multimask_token_for_obj_ptr \
            else mask_tokens_out[:, 0:1]
        return masks, iou, tokens, obj_logits

    def predict_all(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                    dense_prompt_embeddings: torch.Tensor, high_res_features: Optional[List[torch.Tensor]] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 4 mask tokens: logits B x 4 x 4h x 4w, IoU B x 4, mask tokens B x 4 x C, object-score
        logits B x 1 (10, "present", without an object-score head)."""
        b = sparse_prompt_embeddings.shape[0]
        weights = [self.iou_token.weight, self.mask_tokens.weight]
        s = 0
        if self.pred_obj_scores:
            weights.insert(0, self.obj_score_token.weight)
            s = 1
        output_tokens = torch.cat(weights, dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        h, w = src.shape[-2:]
        hs, src = self.transformer(src, image_pe, tokens)
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens, :]
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)
        masks = self._upscale_masks_high_res(src, hyper_in, h, w, high_res_features)
        iou_pred = self.iou_prediction_head(hs[:, s, :])
        if self.pred_obj_scores:
            obj_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            obj_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
        return masks, iou_pred, mask_tokens_out, obj_logits

    def _upscale_masks_high_res(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int,
                                high_res_features: Optional[List[torch.Tensor]]) -> torch.Tensor:
        """As MaskDecoder._upscale_masks (the same channels-last matrix products), with the skip
        connections added before the LayerNorm (stride 8) and before the last GELU (stride 4).

        src: B x (h*w) x C, hyper_in: B x M x C/8 -> B x M x 4h x 4w."""
        if not self.use_high_res_features or high_res_features is None:
            return self._upscale_masks(src, hyper_in, h, w)
        feat_s0, feat_s1 = high_res_features
        up1, norm, act1, up2, act2 = self.output_upscaling
        b = src.shape[0]
        c1, c2 = up1.out_channels, up2.out_channels
        # Skip features in the token layout of the products: (i, j, di, dj, c) and (i, j, di, dj, ei, ej, c)
        # for pixel rows 2i+di (stride 8) and 4i+2di+ei (stride 4).
        s1 = feat_s1.view(-1, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(-1, h * w * 4, c1)
        s0 = feat_s0.view(-1, c2, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(-1, h * w * 16, c2)
        y = F.linear(src, up1.weight.permute(2, 3, 1, 0).flatten(0, 2), up1.bias.repeat(4))
        y = y.view(b, h * w * 4, c1) + s1
        y = act1(F.layer_norm(y, (c1,), norm.weight, norm.bias, norm.eps))
        y = F.linear(y, up2.weight.permute(2, 3, 1, 0).flatten(0, 2), up2.bias.repeat(4))
        y = act2(y.view(b, h * w * 16, c2) + s0)
        masks = hyper_in @ y.transpose(1, 2)
        m = masks.shape[1]
        masks = masks.view(b, m, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return masks.reshape(b, m, 4 * h, 4 * w)

    def _stability(self, logits: torch.Tensor) -> torch.Tensor:
        """B x 1 x H x W logits -> B x 1 stability (area above +delta / area above -delta)."""
        flat = logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        inter = (flat > delta).sum(-1).float()
        union = (flat > -delta).sum(-1).float()
        return torch.where(union > 0, inter / union, torch.ones_like(inter))

    def _dynamic_multimask_via_stability(self, masks: torch.Tensor, iou: torch.Tensor):
        """Token 0's mask where it is stable, else the multimask output with the best IoU."""
        best = torch.argmax(iou[:, 1:], dim=-1)
        rows = torch.arange(iou.shape[0], device=iou.device)
        best_masks = masks[:, 1:][rows, best].unsqueeze(1)
        best_iou = iou[:, 1:][rows, best].unsqueeze(1)
        stable = self._stability(masks[:, 0:1]) >= self.dynamic_multimask_stability_thresh
        out_masks = torch.where(stable[..., None, None], masks[:, 0:1], best_masks)
        out_iou = torch.where(stable, iou[:, 0:1], best_iou)
        return out_masks, out_iou
