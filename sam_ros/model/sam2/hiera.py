"""Hiera, SAM 2's hierarchical image encoder trunk (Ryali et al. 2023, with the windowed absolute
position embedding of Bolya et al. 2023).

A 7x7 stride-4 patch embedding, then four stages of transformer blocks. The first block of
stages 2-4 halves the resolution by max-pooling its queries (inside the attention windows) and
doubles width and heads; blocks attend within non-overlapping windows (one window size per
stage) except a few global-attention blocks. The last block of every stage is an output:
strides 4, 8, 16, 32 of the input.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..common import attention
from ..mask_decoder import MLP


def window_partition(x: torch.Tensor, window: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """B x H x W x C -> (B * nW) x window x window x C, zero-padding H, W up to multiples of the
    window; returns the padded size too."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: Tuple[int, int],
                       size: Tuple[int, int]) -> torch.Tensor:
    """Inverse of window_partition: (B * nW) x window x window x C -> B x H x W x C."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


class PatchEmbed(nn.Module):
    """B x 3 x H x W image -> B x H/4 x W/4 x C tokens (7x7 convolution, stride 4)."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def _max_pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """B x H x W x C -> B x H/s x W/s x C (max over s x s cells)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention over B x H x W x C tokens; with q_stride the queries (and so the
    output) are max-pooled to H/s x W/s."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: Optional[int] = None) -> None:
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)  # B x HW x heads x d
        if self.q_stride:
            q = _max_pool(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(x.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block on B x H x W x C tokens: (windowed) attention and an MLP; a block
    that changes width projects its shortcut, one with q_stride pools it."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0,
                 q_stride: Optional[int] = None, window_size: int = 0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = _max_pool(shortcut, self.q_stride)
        window = self.window_size
        if window > 0:
            size = x.shape[1:3]
            x, padded = window_partition(x, window)
        x = self.attn(x)
        if window > 0:
            if self.q_stride:
                # Pooled queries: the windows shrank by the stride.
                window //= self.q_stride
                size = shortcut.shape[1:3]
                padded = tuple(s + (window - s % window) % window for s in size)
            x = window_unpartition(x, window, padded, size)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The trunk: B x 3 x S x S -> feature maps of strides 4, 8, 16, 32 (B x C_i x S/s x S/s),
    highest resolution first; C_i = embed_dim * 2^i."""

    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14),
        q_pool: int = 3,
        q_stride: int = 2,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError("one window size per stage is needed")
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.blocks = nn.ModuleList()
        stage = 0
        dim = embed_dim
        for i in range(sum(stages)):
            dim_out = dim
            # The first block of a stage still uses the previous stage's window (its pooled
            # queries end up in windows of the new stage's size).
            window = 0 if i in global_att_blocks else window_spec[stage]
            if i - 1 in self.stage_ends:
                dim_out = int(dim * 2)
                num_heads = int(num_heads * 2)
                stage += 1
            self.blocks.append(MultiScaleBlock(dim, dim_out, num_heads, mlp_ratio,
                                               q_stride if i in q_pool_blocks else None, window))
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _get_pos_embed(self, size: Tuple[int, int]) -> torch.Tensor:
        """The background embedding resized (bicubic) to the token grid plus the tiled window
        embedding: 1 x H x W x C. Without autograd it is kept for the next frame (the resize costs
        ~50 ms at 1024 px on a CPU), keyed by the parameters' storage and version so that a new
        state dict or a cast recomputes it."""
        window = self.pos_embed_window
        key = (size, self.pos_embed.dtype, self.pos_embed.device, self.pos_embed.data_ptr(),
               self.pos_embed._version, window.data_ptr(), window._version)
        cached = getattr(self, "_pos_cache", None)
        if cached is not None and cached[0] == key and not torch.is_grad_enabled():
            return cached[1]
        pos = F.interpolate(self.pos_embed, size=size, mode="bicubic")
        pos = pos + window.tile([1, 1, size[0] // window.shape[2], size[1] // window.shape[3]])
        pos = pos.permute(0, 2, 3, 1)
        if not torch.is_grad_enabled():
            self._pos_cache = (key, pos)
        return pos

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._get_pos_embed(tuple(x.shape[1:3]))
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
