"""Small building blocks shared by the encoders and the decoder."""
from typing import Type

import torch
import torch.nn.functional as F
from torch import nn


class MLPBlock(nn.Module):
    """Linear -> activation -> linear, applied to the last dimension."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a B x C x H x W tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Channels-last: the channels are the innermost axis, so this is a plain LayerNorm
            # over a B x H x W x C view (one fused pass instead of eight elementwise ones).
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)
        centered = x - mean
        var = centered.pow(2).mean(1, keepdim=True)
        x = centered * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def cpu_bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for bfloat16 on a CPU, where torch's fused attention kernel is no
    faster than in float32 while bf16 matrix products are 2-3x faster: bf16 products over chunks of
    queries (only a chunk's scores are held at a time). q: ... x N x d, k: ... x M x d,
    v: ... x M x e (leading dims broadcast, e.g. values shared by all heads) -> ... x N x e."""
    q = q * (q.shape[-1] ** -0.5)
    kt = k.transpose(-2, -1).contiguous()  # once: a transposed operand is copied by every product
    v = v.contiguous()
    out = q.new_empty(torch.broadcast_shapes(q.shape[:-2], v.shape[:-2]) + (q.shape[-2], v.shape[-1]))
    for i in range(0, q.shape[-2], chunk):
        scores = torch.matmul(q[..., i:i + chunk, :], kt)
        torch.matmul(torch.softmax(scores, dim=-1), v, out=out[..., i:i + chunk, :])
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention (B x H x N x d), through :func:`cpu_bf16_attention` for bf16 on
    a CPU and torch's fused kernel otherwise (float32 keeps the reference's exact kernel)."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        return cpu_bf16_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)
