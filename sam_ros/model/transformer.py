"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Every module here accepts an image side with batch 1 against prompt tokens with batch B: while the
image tokens are still the same for every prompt (the first block's token-to-image attention and
the first image-side query projection), they are projected once, not copied B times.
"""
import math
from typing import Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MLPBlock


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        """
        Args:
            depth: number of two-way blocks.
            embedding_dim: channels of tokens and image embedding.
            num_heads: attention heads (must divide the attention's internal dimension).
            mlp_dim: hidden width of the token MLP.
            attention_downsample_rate: cross-attention projects to embedding_dim / rate channels.
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
        attn_out = self.final_attn_token_to_image(q=queries + point_embedding, k=keys + key_pe, v=keys)
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
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
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
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=queries + query_pe, k=k, v=keys))
        queries = self.norm3(queries + self.mlp(queries))

        attn_out = self.cross_attn_image_to_token(q=k, k=queries + query_pe, v=queries)
        keys = self.norm4(keys + attn_out)
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
