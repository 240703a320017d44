"""Losses of the Segment Anything recipe.

Each predicted mask is supervised with focal + dice (weighted 20:1) against the ground truth;
with several (ambiguity) outputs only the lowest-loss mask receives gradient; the IoU head is
trained with the mean squared error against each mask's actual IoU.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
# Class balance of the focal loss. The paper does not give it; RetinaNet's 0.25 (which favours
# background) made a model trained from scratch collapse to empty masks within 150 steps here,
# so foreground and background are weighted equally.
FOCAL_ALPHA = 0.5


def focal_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
               alpha: float = FOCAL_ALPHA, gamma: float = 2.0) -> torch.Tensor:
    """Mean sigmoid focal loss over valid pixels. logits/target/valid: ... x H x W -> ...

    alpha weights foreground pixels (1 - alpha background); 0.5 is balanced.
    """
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return (loss * valid).sum((-1, -2)) / valid.sum((-1, -2)).clamp(min=1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss over valid pixels. ... x H x W -> ..."""
    prob = torch.sigmoid(logits) * valid
    target = target * valid
    inter = (prob * target).sum((-1, -2))
    total = prob.sum((-1, -2)) + target.sum((-1, -2))
    return 1 - (2 * inter + eps) / (total + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded logits with the target (1 when both are empty). ... x H x W -> ..."""
    pred = (logits > 0) & (valid > 0)
    gt = (target > 0.5) & (valid > 0)
    inter = (pred & gt).sum((-1, -2)).float()
    union = (pred | gt).sum((-1, -2)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss for B prompts with M candidate masks each.

    Args:
        logits: B x M x H x W mask logits (at the target's resolution).
        iou_pred: B x M predicted IoUs.
        target: B x H x W ground-truth masks (0/1 floats).
        valid: B x H x W, 1 where the image is, 0 on padding.
    Returns:
        total loss, mask loss (of the lowest-loss mask per prompt), IoU-head loss, and the
        index (B) of the lowest-loss mask.
    """
    t = target[:, None].expand_as(logits)
    v = valid[:, None].expand_as(logits)
    per_mask = FOCAL_WEIGHT * focal_loss(logits, t, v) + DICE_WEIGHT * dice_loss(logits, t, v)  # B x M
    best = per_mask.detach().argmin(dim=1)
    mask_loss = per_mask.gather(1, best[:, None]).mean()
    with torch.no_grad():
        actual_iou = mask_iou(logits, t, v)
    iou_loss = F.mse_loss(iou_pred, actual_iou)
    return mask_loss + iou_loss, mask_loss, iou_loss, best
