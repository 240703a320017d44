"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Every module here accepts an image side with batch 1 against prompt tokens with batch B: while the
image tokens are still the same for every prompt (the first block's token-to-image attention and
the first image-side query projection), they are projected once, not copied B times.

The cross attentions between a few prompt tokens (N, typically 7) and thousands of image tokens
are computed in whichever of two mathematically equal orders costs fewer multiply-adds. Projecting
every image token (4096 x 256 -> 128 per projection) is the standard order; when heads x N is
smaller than the projection width, the projection weights are folded into the token side instead:
a key projection becomes q_h W_k,h (N x 256 per head) applied to the raw image tokens (the key bias
adds a constant per query and cancels in the softmax), a value projection is applied after the
attention-weighted sum of raw image tokens (attention rows sum to one), and the image side's query
and output projections fold into the tokens' keys and values. Same results up to float rounding
(parity tests against Meta's implementation), 2x fewer multiply-adds per prompt.
"""
import math
from typing import Callable, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MLPBlock


def _softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Softmax accumulated in float32 at least (for fp16 / bf16 inputs)."""
    if x.dtype in (torch.float32, torch.float64):
        return torch.softmax(x, dim=dim)
    return torch.softmax(x, dim=dim, dtype=torch.float32).to(x.dtype)


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        mlp_block: Callable[[int, int, Type[nn.Module]], nn.Module] = MLPBlock,
    ) -> None:
        """
        Args:
            depth: number of two-way blocks.
            embedding_dim: channels of tokens and image embedding.
            num_heads: attention heads (must divide the attention's internal dimension).
            mlp_dim: hidden width of the token MLP.
            attention_downsample_rate: cross-attention projects to embedding_dim / rate channels.
            mlp_block: builds the token MLP from (embedding_dim, mlp_dim, activation); SAM's
                MLPBlock (lin1 / lin2) by default, SAM 2 names the same layers layers.0 / layers.1.
        """
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
                mlp_block=mlp_block,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            image_embedding: Bi x C x h x w, Bi = B or 1 (shared by all prompts).
            image_pe: 1 x C x h x w positional encoding of the image grid.
            point_embedding: B x N x C prompt tokens (output tokens first).
        Returns:
            queries B x N x C and image tokens B x (h*w) x C.
        """
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2).to(keys.dtype)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe)
        attn_out = self.final_attn_token_to_image.attend_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attn_out)
        if keys.shape[0] != queries.shape[0]:
            keys = keys.expand(queries.shape[0], -1, -1)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token-to-image attention, token MLP, image-to-token attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        mlp_block: Callable[[int, int, Type[nn.Module]], nn.Module] = MLPBlock,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = mlp_block(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image.attend_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        keys = self.norm4(self.cross_attn_image_to_token.attend_tokens(k, queries + query_pe, queries, residual=keys))
        return queries, keys


class Attention(nn.Module):
    """Multi-head attention whose q/k/v are projected to embedding_dim / downsample_rate channels."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError("num_heads must divide embedding_dim / downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q: Bq x Nq x C, k/v: Bk x Nk x C with Bq == Bk or one of them 1 -> B x Nq x C."""
        q = self._separate_heads(self.q_proj(q))
        k = self._separate_heads(self.k_proj(k))
        v = self._separate_heads(self.v_proj(v))
        bq, bk = q.shape[0], k.shape[0]
        if bq == bk:
            out = F.scaled_dot_product_attention(q, k, v)
        elif bk == 1:
            # Keys shared by every prompt: fold the prompts into the query sequence.
            heads, nq, d = q.shape[1:]
            folded = q.transpose(0, 1).reshape(1, heads, bq * nq, d)
            out = F.scaled_dot_product_attention(folded, k, v)
            out = out.reshape(heads, bq, nq, d).transpose(0, 1)
        else:
            # Queries shared (image tokens) against per-prompt keys: broadcast the matmuls.
            attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), dim=-1)
            out = attn @ v
        b, heads, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, heads * d))

    # ---- cross attention between few prompt tokens and many image tokens ----------------------
    def attend_image(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Prompt tokens attend to image tokens. q: B x N x C; k, v: Bi x M x C (Bi = B or 1) -> B x N x C."""
        b, n, _ = q.shape
        bi, m, c = k.shape
        heads, d = self.num_heads, self.internal_dim // self.num_heads
        prompts_per_image = b if bi == 1 else 1
        if prompts_per_image * heads * n >= self.internal_dim:
            return self.forward(q, k, v)
        qh = self._separate_heads(self.q_proj(q))  # B x H x N x d
        # scores = q_h (W_k,h x + b_k,h)^T: the bias term is constant per query and cancels in softmax
        qk = torch.einsum("bhnd,hdc->bhnc", qh, self.k_proj.weight.view(heads, d, c)) * (d ** -0.5)
        qk = qk.reshape(bi, -1, c)  # Bi x (B/Bi * H * N) x C
        attn = _softmax(qk @ k.transpose(1, 2))
        # sum_j a_j (W_v,h v_j + b_v,h) = W_v,h (sum_j a_j v_j) + b_v,h since the weights sum to one
        pooled = (attn @ v).reshape(b, heads, n, c)
        out = torch.einsum("bhnc,hdc->bhnd", pooled, self.v_proj.weight.view(heads, d, c))
        out = out + self.v_proj.bias.view(1, heads, 1, d)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, heads * d))

    def attend_tokens(self, q: Tensor, k: Tensor, v: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """Image tokens attend to prompt tokens. q: Bi x M x C (Bi = B or 1); k, v: B x N x C -> B x M x C,
        plus `residual` (Bi x M x C) when given (added inside the last matrix product)."""
        bi, m, c = q.shape
        b, n, _ = k.shape
        heads, d = self.num_heads, self.internal_dim // self.num_heads
        fold_out = heads * n < self.internal_dim
        fold_q = (b if bi == 1 else 1) * heads * n < self.internal_dim
        kh = self._separate_heads(self.k_proj(k))  # B x H x N x d
        vh = self._separate_heads(self.v_proj(v))
        scale = d ** -0.5
        # Scores are laid out B x H x N x M: the softmax runs over the few tokens (dim 2), which
        # vectorises over the many image tokens (a softmax over a last dimension of 7 does not).
        if fold_q:
            # (W_q,h x + b_q,h) . k_h,t = x . (W_q,h^T k_h,t) + b_q,h . k_h,t
            g = torch.einsum("hdc,bhtd->bhtc", self.q_proj.weight.view(heads, d, c), kh * scale)
            g0 = torch.einsum("hd,bhtd->bht", self.q_proj.bias.view(heads, d), kh * scale).reshape(b, heads * n, 1)
            if bi == 1:
                scores = torch.addmm(g0.reshape(-1, 1), g.reshape(b * heads * n, c), q[0].t())
            else:
                scores = torch.baddbmm(g0, g.reshape(b, heads * n, c), q.transpose(1, 2))
            scores = scores.view(b, heads, n, m)
        else:
            qh = self._separate_heads(self.q_proj(q))  # Bi x H x M x d
            if bi == 1:  # shared image queries: one product per head, not B copies of them
                scores = torch.einsum("bhnd,hmd->bhnm", kh * scale, qh[0])
            else:
                scores = (kh * scale) @ qh.transpose(-2, -1)  # B x H x N x M
        attn = _softmax(scores, dim=2)
        if fold_out:
            # out_proj(sum_t a_t v_h,t) = sum_t a_t (W_o,h v_h,t) + b_o
            # + b_o: each head's weights sum to one, so b_o / heads on every row of vo adds exactly b_o
            vo = torch.einsum("bhtd,chd->bhtc", vh, self.out_proj.weight.view(c, heads, d))
            vo = (vo + self.out_proj.bias / heads).reshape(b, heads * n, c)
            base = residual.expand(b, m, c) if residual is not None else vo.new_zeros(()).expand(b, m, c)
            return torch.baddbmm(base, attn.view(b, heads * n, m).transpose(1, 2), vo)
        out = attn.transpose(-2, -1) @ vh  # B x H x M x d
        out = self.out_proj(out.transpose(1, 2).reshape(b, m, heads * d))
        return out if residual is None else residual + out
