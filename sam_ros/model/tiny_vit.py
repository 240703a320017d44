"""TinyViT image encoder as used by MobileSAM (``vit_t``).

Four stages: a convolutional stage of MBConv blocks at 1/4 resolution, then three stages of
windowed-attention blocks with a depthwise "local" convolution between attention and MLP. The last
patch merging keeps the resolution, so the output grid is img_size / 16 (64 x 64 at 1024), followed
by the same 256-channel neck as SAM's ViT. Parameter names follow MobileSAM's ``mobile_sam.pt``
(including the unused classification head), so that file loads unchanged.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d


class Conv2d_BN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (children named ``c`` and ``bn``)."""

    def __init__(self, in_chans: int, out_chans: int, ks: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, ks, stride, pad, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: B x 3 x H x W -> B x C x H/4 x W/4."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual."""

    def __init__(self, in_chans: int, out_chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(in_chans * expand_ratio)
        self.conv1 = Conv2d_BN(in_chans, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, ks=3, stride=1, pad=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, out_chans, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv (stride 2, or 1 for the last merge), 1x1 conv.

    Input B x C x H x W or B x (H*W) x C; output B x (H'*W') x C'.
    """

    def __init__(self, input_resolution: Tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim, 1, 1, 0)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)  # channels-last view, no copy
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)  # a view when x is channels-last


class Mlp(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear on B x N x C tokens."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Window attention with a learned bias per head and per (|dy|, |dx|) offset."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: Tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * key_dim * num_heads)
        self.proj = nn.Linear(key_dim * num_heads, dim)
        rh, rw = resolution
        # Offsets are numbered in order of first appearance over all point pairs, which for a
        # grid is dy * rw + dx.
        ys, xs = torch.meshgrid(torch.arange(rh), torch.arange(rw), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        idxs = (ys[:, None] - ys[None, :]).abs() * rw + (xs[:, None] - xs[None, :]).abs()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, rh * rw))
        self.register_buffer("attention_bias_idxs", idxs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x N x C -> B x N x C."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=3)
        # softmax(q k^T * scale + bias) v written out: for these short windows (49-196 tokens,
        # 32-wide heads) it is faster on CPUs than F.scaled_dot_product_attention with a float
        # mask, whose math path adds several passes over the B x heads x N x N scores.
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1))
        attn += self.attention_biases[:, self.attention_bias_idxs].to(attn.dtype)
        out = torch.matmul(attn.softmax(dim=-1), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class TinyViTBlock(nn.Module):
    """Window attention + residual, depthwise local conv, MLP + residual, on B x (H*W) x C."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], num_heads: int, window_size: int,
                 mlp_ratio: float = 4.0, local_conv_size: int = 3) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, (window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, ks=local_conv_size, stride=1, pad=local_conv_size // 2,
                                    groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            attn = self.attn(x)
        else:
            grid = x.view(b, h, w, c)
            pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pad_b or pad_r:
                grid = F.pad(grid, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            nh, nw = ph // ws, pw // ws
            windows = grid.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            windows = self.attn(windows)
            grid = windows.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            attn = grid[:, :h, :w].reshape(b, n, c)
        x = x + attn
        # The tokens seen as a channels-last image: the depthwise conv reads and writes them in
        # place of two layout copies.
        x = self.local_conv(x.view(b, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, n, c)
        return x + self.mlp(x)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on B x C x H x W, then patch merging."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on B x (H*W) x C, then optional patch merging."""

    def __init__(self, dim: int, input_resolution: Tuple[int, int], depth: int, num_heads: int,
                 window_size: int, mlp_ratio: float, local_conv_size: int,
                 downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, input_resolution, num_heads, window_size, mlp_ratio, local_conv_size)
            for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        """
        Args:
            img_size: side of the square (padded) input; the output grid is img_size // 16.
            num_classes: size of the (unused) classification head kept for checkpoint
                compatibility; 0 drops it.
            embed_dims, depths, num_heads, window_sizes: per-stage width, depth, heads, window.
            out_chans: channels of the output image embedding.
        """
        super().__init__()
        if len(embed_dims) != 4:
            raise ValueError("TinyViT has exactly 4 stages")
        self.img_size = img_size
        res = img_size // 4
        # Stage i runs at res / 2**i, except the last stage, whose merge keeps the resolution.
        resolutions = [res, res // 2, res // 4, res // 4]
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(4):
            downsample = None
            if i < 3:
                stride = 1 if i == 2 else 2
                downsample = PatchMerging((resolutions[i],) * 2, embed_dims[i], embed_dims[i + 1], stride)
            if i == 0:
                self.layers.append(ConvLayer(embed_dims[0], depths[0], mbconv_expand_ratio, downsample))
            else:
                self.layers.append(BasicLayer(embed_dims[i], (resolutions[i],) * 2, depths[i], num_heads[i],
                                              window_sizes[i], mlp_ratio, local_conv_size, downsample))
        self.grid = resolutions[3]
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x img_size x img_size -> B x out_chans x img_size/16 x img_size/16."""
        # Channels-last throughout: the depthwise and 1x1 convolutions are faster in it on CPUs,
        # and the token stages read it as B x (H*W) x C without copies.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.view(b, self.grid, self.grid, c).permute(0, 3, 1, 2)
        return self.neck(x).contiguous()


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)
