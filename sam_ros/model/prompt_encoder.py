"""SAM's prompt encoder: points and boxes to sparse tokens, a low-res mask to a dense embedding."""
import math
from typing import Optional, Tuple, Type

import torch
from torch import nn

from .common import LayerNorm2d

# Point labels understood by the prompt encoder.
LABEL_PADDING = -1
LABEL_BACKGROUND = 0
LABEL_FOREGROUND = 1


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of 2-D coordinates with random (fixed) Gaussian frequencies.

    Always computed in float32: the phases reach hundreds of radians, which half precision
    cannot represent.
    """

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """coords in [0, 1], ... x 2 -> ... x 2*num_pos_feats."""
        with torch.autocast(coords.device.type, enabled=False):  # keep float32 under autocast
            coords = (2 * coords.float() - 1) @ self.positional_encoding_gaussian_matrix.float()
            coords = 2 * math.pi * coords
            return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an h x w grid: C x h x w."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates (x, y) in an image of size (H, W), B x N x 2 -> B x N x C."""
        scale = coords.new_tensor([1.0 / image_size[1], 1.0 / image_size[0]], dtype=torch.float32)
        return self._pe_encoding(coords.float() * scale)


class PromptEncoder(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int,
        activation: Type[nn.Module] = nn.GELU,
    ) -> None:
        """
        Args:
            embed_dim: prompt embedding dimension (256 in SAM).
            image_embedding_size: (H, W) of the image embedding grid.
            input_image_size: (H, W) of the padded model input, the frame of prompt coordinates.
            mask_in_chans: hidden channels of the mask-prompt convolutions.
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: 1 x C x h x w (float32)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """B x N x 2 points (input-frame pixels) and B x N labels -> B x N(+1) x C."""
        points = points.float() + 0.5  # centre of the pixel
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), LABEL_PADDING)], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == LABEL_PADDING, torch.zeros_like(pe), pe)
        emb = emb + (labels == LABEL_PADDING) * self.not_a_point_embed.weight.float()
        emb = emb + (labels == LABEL_BACKGROUND) * self.point_embeddings[0].weight.float()
        emb = emb + (labels == LABEL_FOREGROUND) * self.point_embeddings[1].weight.float()
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """B x 4 boxes (x0, y0, x1, y1; input-frame pixels) -> B x 2 x C corner tokens."""
        corners = boxes.float().reshape(-1, 2, 2) + 0.5
        pe = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight]).float()
        return pe + corner_types

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            points: (coords B x N x 2, labels B x N) or None.
            boxes: B x 4 or None.
            masks: B x 1 x 4h x 4w low-res mask logits or None.
        Returns:
            sparse embeddings B x N' x C (in the module's dtype) and dense embeddings
            B x C x h x w (batch 1, broadcastable, when no mask prompt is given).
        """
        dtype = self.no_mask_embed.weight.dtype
        bs = _batch_size(points, boxes, masks)
        parts = []
        if points is not None:
            parts.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        if parts:
            sparse = torch.cat(parts, dim=1).to(dtype)
        else:
            sparse = torch.empty((bs, 0, self.embed_dim), device=self.no_mask_embed.weight.device, dtype=dtype)
        if masks is not None:
            dense = self.mask_downscaling(masks.to(dtype))
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        return sparse, dense


def _batch_size(points, boxes, masks) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1
