"""SAM 2's position encodings: 2-D sine features of feature maps (the FPN neck and the memory
encoder), 1-D sine features of frame distances (object pointers) and the axial rotary encoding of
the memory attention (RoPE on a 2-D token grid)."""
import math
from typing import Dict, Tuple

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """DETR-style sine/cosine features of normalised (y, x) positions: B x C x H x W -> the same
    shape (first half from y, second from x). Cached per grid size; float32."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.scale = 2 * math.pi
        self._cache: Dict[Tuple[int, int, str], torch.Tensor] = {}

    def _grid(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        if key not in self._cache:
            eps = 1e-6
            y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
            x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
            y = y / (h + eps) * self.scale
            x = x / (w + eps) * self.scale
            dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
            dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
            pos_y = _interleave_sin_cos(y[:, None] / dim_t)  # H x C/2
            pos_x = _interleave_sin_cos(x[:, None] / dim_t)  # W x C/2
            pos = torch.cat([pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)], dim=-1)
            self._cache[key] = pos.permute(2, 0, 1).contiguous()
        return self._cache[key]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self._grid(x.shape[-2], x.shape[-1], x.device)
        return pos[None].expand(x.shape[0], -1, -1, -1)


def _interleave_sin_cos(phase: torch.Tensor) -> torch.Tensor:
    """... x D phases -> ... x D with sin of the even and cos of the odd columns, paired up."""
    return torch.stack([phase[..., 0::2].sin(), phase[..., 1::2].cos()], dim=-1).flatten(-2)


def get_1d_sine_pe(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """N positions -> N x dim sine (first half) and cosine (second half) features."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    phase = positions.unsqueeze(-1) / dim_t
    return torch.cat([phase.sin(), phase.cos()], dim=-1)


def axial_rope_angles(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles of the axial 2-D RoPE for a row-major end_y x end_x grid: (end_x*end_y) x dim/2
    (the first dim/4 pairs rotate with x, the rest with y)."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    return torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (... x N x d) by the angles whose cos/sin are N x d/2;
    x's token count may be a multiple of N (memories of several frames): the angles repeat."""
    n = cos.shape[0]
    shape = x.shape
    xf = x.float().reshape(*shape[:-2], shape[-2] // n, n, shape[-1] // 2, 2)
    a, b = xf[..., 0], xf[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.reshape(shape).type_as(x)
