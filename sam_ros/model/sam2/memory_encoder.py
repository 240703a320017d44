"""SAM 2's memory encoder: a frame's predicted mask, downsampled 16x by strided convolutions,
is added to the frame's (projected) image embedding, fused by two ConvNeXt blocks and projected
to the memory width (64): one spatial memory B x 64 x h x w per frame, with its sine encoding."""
import math
from typing import Dict, List

import torch
from torch import nn

from ..common import LayerNorm2d
from .position_encoding import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """B x 1 x S x S mask -> B x embed_dim x S/16 x S/16 (each stride-2 step: conv, LayerNorm2d, GELU;
    channels grow by stride^2 each step)."""

    def __init__(self, embed_dim: int = 256, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                 total_stride: int = 16) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        self.encoder = nn.Sequential()
        c_in = c_out = 1
        for _ in range(num_layers):
            c_out = c_in * stride ** 2
            self.encoder.append(nn.Conv2d(c_in, c_out, kernel_size=kernel_size, stride=stride, padding=padding))
            self.encoder.append(LayerNorm2d(c_out))
            self.encoder.append(nn.GELU())
            c_in = c_out
        self.encoder.append(nn.Conv2d(c_out, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm2d, pointwise MLP (GELU), layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, in_dim: int = 256, out_dim: int = 64, fuser_layers: int = 2) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, fuser_layers)
        self.position_encoding = PositionEmbeddingSine(out_dim)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
        """pix_feat: B x C x h x w image embedding; masks: B x 1 x 16h x 16w, already squashed
        (SAM 2 feeds sigmoid(logits) * 20 - 10). -> memory features B x C_out x h x w and
        their position encoding."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return {"vision_features": x, "vision_pos_enc": [pos]}
