"""SAM 2's memory attention: the current frame's image tokens attend to themselves and to the
memory bank (spatial memories of past frames and object pointers), with axial rotary position
encoding (RoPE) on the image-grid tokens.

Tokens are batch-first here: B x N x C.
"""
import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..common import cpu_bf16_attention
from .position_encoding import apply_rope, axial_rope_angles


class RoPEAttention(nn.Module):
    """Multi-head attention with 2-D RoPE on queries and keys. Queries form a square grid; keys are
    a whole number of such grids (rope_k_repeat: the memories of several frames) followed by
    `num_k_exclude_rope` tokens without rotation (object pointers)."""

    def __init__(self, embedding_dim: int, num_heads: int = 1, downsample_rate: int = 1, kv_in_dim: int = 0,
                 rope_theta: float = 10000.0, rope_k_repeat: bool = False) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        kv_in_dim = kv_in_dim or embedding_dim
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._angles: Dict[Tuple[int, str], Tuple[torch.Tensor, torch.Tensor]] = {}

    def _rope(self, n: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        key = (n, str(device))
        if key not in self._angles:
            side = int(round(math.sqrt(n)))
            if side * side != n:
                raise ValueError(f"RoPE needs a square grid of query tokens, got {n}")
            angles = axial_rope_angles(self.internal_dim // self.num_heads, side, side, self.rope_theta).to(device)
            self._angles[key] = (angles.cos(), angles.sin())
        return self._angles[key]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        """q: B x Nq x C, k / v: B x Nk x C_kv -> B x Nq x C."""
        # bfloat16 on a CPU: torch's fused attention kernel is no faster in bf16 than in fp32 there,
        # while bf16 matrix products are 2-3x faster; attention is computed in query chunks, and
        # values narrower than a head are attended before their projection (softmax(S) (X W^T + b)
        # = (softmax(S) X) W^T + b: the memory's 64 channels instead of 256).
        chunked = q.device.type == "cpu" and q.dtype == torch.bfloat16
        project_after = chunked and v.shape[-1] < self.internal_dim // self.num_heads
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = v[:, None] if project_after else self._heads(self.v_proj(v))
        cos, sin = self._rope(q.shape[-2], q.device)
        q = apply_rope(q, cos, sin)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope != q.shape[-2] and not self.rope_k_repeat:
            raise ValueError("keys longer than queries need rope_k_repeat")
        if n_rope > 0:
            rotated = apply_rope(k[:, :, :n_rope], cos, sin)
            k = torch.cat([rotated, k[:, :, n_rope:]], dim=2) if num_k_exclude_rope else rotated
        if not chunked:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = cpu_bf16_attention(q, k, v)
            if project_after:  # B x H x Nq x C_kv -> each head's slice of the value projection
                h, d = self.num_heads, self.internal_dim // self.num_heads
                w = self.v_proj.weight.view(h, d, -1).transpose(1, 2)
                out = torch.matmul(out, w) + self.v_proj.bias.view(h, 1, d)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: self-attention (RoPE), cross-attention to the memory (RoPE; keys carry the
    memory's position encoding), ReLU MLP."""

    def __init__(self, d_model: int = 256, dim_feedforward: int = 2048, num_heads: int = 1, kv_in_dim: int = 64,
                 rope_theta: float = 10000.0) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(d_model, num_heads, kv_in_dim=kv_in_dim, rope_theta=rope_theta,
                                              rope_k_repeat=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                num_k_exclude_rope: int = 0) -> torch.Tensor:
        """tgt: B x N x C image tokens; memory / pos: B x M x C_mem."""
        x = self.norm1(tgt)
        tgt = tgt + self.self_attn(x, x, x)
        x = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image(x, memory + pos, memory, num_k_exclude_rope=num_k_exclude_rope)
        x = self.norm3(tgt)
        return tgt + self.linear2(F.relu(self.linear1(x)))


class MemoryAttention(nn.Module):
    def __init__(self, d_model: int = 256, num_layers: int = 4, dim_feedforward: int = 2048, num_heads: int = 1,
                 kv_in_dim: int = 64) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(MemoryAttentionLayer(d_model, dim_feedforward, num_heads, kv_in_dim)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_obj_ptr_tokens: int = 0) -> torch.Tensor:
        """
        Args:
            curr / curr_pos: B x N x C current image tokens and their position encoding.
            memory / memory_pos: B x M x C_mem (spatial memories first, then object-pointer tokens).
            num_obj_ptr_tokens: how many of the last memory tokens are object pointers (no RoPE).
        Returns:
            B x N x C memory-conditioned image tokens.
        """
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_k_exclude_rope=num_obj_ptr_tokens)
        return self.norm(x)
