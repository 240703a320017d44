"""SAM's ViT image encoder (ViT-B / ViT-L / ViT-H).

A plain ViT over 16x16 patches with windowed attention in most blocks, global attention in a few,
decomposed relative position embeddings (MViTv2) and a convolutional neck to the 256-channel
image embedding. Parameter names follow the official checkpoints, so their state dicts load
unchanged. Attention runs through ``F.scaled_dot_product_attention`` with the relative position
terms as an additive bias; global attention is computed in query chunks so the bias never needs
the full (heads x N x N) matrix at once.
"""
from typing import Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock

# Elements of one additive attention bias chunk on CPU (~8 MB in fp32: stays in cache).
_CPU_BIAS_CHUNK = 2 * 1024 * 1024


class ImageEncoderViT(nn.Module):
    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        act_layer: Type[nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        global_attn_indexes: Tuple[int, ...] = (),
    ) -> None:
        """
        Args:
            img_size: side of the square (padded) input image.
            patch_size: side of a patch; the embedding grid is img_size // patch_size.
            embed_dim, depth, num_heads, mlp_ratio: ViT width, depth, heads and MLP ratio.
            out_chans: channels of the output image embedding.
            use_abs_pos / use_rel_pos: absolute / decomposed relative position embeddings.
            window_size: window side for windowed blocks (0 = all global).
            global_attn_indexes: indexes of blocks that use global attention.
        """
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: Optional[nn.Parameter] = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))

        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x img_size x img_size (normalized, padded) -> B x out_chans x grid x grid."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: B x C x H x W -> B x H/p x W/p x embed_dim."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when window_size > 0."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        act_layer: Type[nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=act_layer)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = shortcut + self.attn(self.norm1(x), window_size=self.window_size)
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head attention with decomposed relative position embeddings."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required with relative position embeddings")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor, window_size: int = 0) -> torch.Tensor:
        """x: B x H x W x C tokens. With window_size > 0 attention runs inside non-overlapping
        windows of the zero-padded grid (padding tokens take part as keys, as in SAM)."""
        b, h, w, c = x.shape
        # Projections are per token, so q/k/v are computed on the real tokens only; a padding
        # token (all zeros after norm1) projects to the bias, which is what SAM feeds it.
        qkv = self.qkv(x)
        if window_size > 0:
            qkv, (hp, wp) = _pad_to_multiple(qkv, window_size, self.qkv.bias)
            qkv = window_partition(qkv, window_size)
            gh = gw = window_size
        else:
            gh, gw = h, w
        n = qkv.shape[0]
        q, k, v = qkv.reshape(n, gh * gw, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = self._attend(q, k, v, (gh, gw))  # n x heads x tokens x head_dim
        out = out.transpose(1, 2).reshape(n, gh, gw, c)
        if window_size > 0:
            out = window_unpartition(out, window_size, (hp, wp), (h, w))
        return self.proj(out)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        if not self.use_rel_pos:
            return F.scaled_dot_product_attention(q, k, v)
        gh, gw = size
        n, heads, tokens, dim = q.shape
        rel_h, rel_w = decomposed_rel_pos(q.reshape(n * heads, gh, gw, dim), self.rel_pos_h, self.rel_pos_w)
        rel_h = rel_h.view(n, heads, gh, gw, gh, 1)
        rel_w = rel_w.view(n, heads, gh, gw, 1, gw)
        if q.device.type != "cpu" or torch.onnx.is_in_onnx_export():
            # GPU kernels (and exported graphs) take the whole additive bias at once.
            bias = (rel_h + rel_w).reshape(n, heads, tokens, tokens)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        # CPU: process a few query rows at a time so the bias chunk stays in cache (global
        # attention at 64 x 64 would otherwise write and read heads x 4096 x 4096 values).
        rows = max(1, min(gh, _CPU_BIAS_CHUNK // max(1, n * heads * gw * tokens)))
        outs = []
        scale = dim ** -0.5
        kt = k.transpose(-2, -1) if q.dtype != torch.float32 else None
        for r0 in range(0, gh, rows):
            r1 = min(gh, r0 + rows)
            q_chunk = q[:, :, r0 * gw : r1 * gw]
            if kt is None:
                bias = (rel_h[:, :, r0:r1] + rel_w[:, :, r0:r1]).reshape(n, heads, (r1 - r0) * gw, tokens)
                outs.append(F.scaled_dot_product_attention(q_chunk, k, v, attn_mask=bias))
            else:
                # Reduced precision: the fused CPU kernel with a mask is slow; an explicit
                # chunked softmax(qk^T + bias) v is 1.7x faster and just as exact.
                scores = ((q_chunk * scale) @ kt).view(n, heads, r1 - r0, gw, gh, gw)
                scores.add_(rel_h[:, :, r0:r1]).add_(rel_w[:, :, r0:r1])
                attn = torch.softmax(scores.view(n, heads, (r1 - r0) * gw, tokens), dim=-1)
                outs.append(attn @ v)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _pad_to_multiple(x: torch.Tensor, window_size: int, fill: Optional[torch.Tensor]):
    """Pad B x H x W x C on the bottom/right to multiples of window_size with `fill` (a C-vector)."""
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    hp, wp = h + pad_h, w + pad_w
    if fill is None:
        return F.pad(x, (0, 0, 0, pad_w, 0, pad_h)), (hp, wp)
    out = fill.to(x.dtype).expand(b, hp, wp, c).clone()
    out[:, :h, :w] = x
    return out, (hp, wp)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """B x Hp x Wp x C (Hp, Wp multiples of window_size) -> B*nW x ws x ws x C."""
    b, hp, wp, c = x.shape
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """B*nW x ws x ws x C -> B x H x W x C, dropping the padding."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings for every (query, key) offset: q_size x k_size x C.

    The table is linearly resized when it was trained for another grid size.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(rel_pos.T[None].float(), size=max_rel_dist, mode="linear")
        rel_pos = resized[0].T.to(rel_pos.dtype)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Height and width terms of the decomposed relative position bias (MViTv2).

    Args:
        q: unscaled queries, B x qh x qw x C.
    Returns:
        rel_h: B x qh x qw x kh and rel_w: B x qh x qw x kw (keys on the same grid as queries);
        the bias for query (i, j) and key (m, n) is rel_h[i, j, m] + rel_w[i, j, n].
    """
    _, qh, qw, _ = q.shape
    rh = get_rel_pos(qh, qh, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(qw, qw, rel_pos_w).to(q.dtype)
    rel_h = torch.einsum("bhwc,hkc->bhwk", q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", q, rw)
    return rel_h, rel_w
