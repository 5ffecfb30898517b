"""Additive attention (Fastformer).

Paper: Wu et al. 2021, "Fastformer: Additive Attention Can Be All You Need". Per head, a
softmax over tokens of learned scores pools the queries into one global query; it is multiplied
element-wise into every key, and a second softmax pooling of those gives one global key, which
multiplies every value; a linear transform plus the query residual gives the output. No N x N
matrix is formed: cost O(N C^2) for the projections and O(N C) for the mixing, N tokens and C
channels.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("additive")
class AdditiveAttention(TokenMixer):
    """Fastformer's additive attention: global query and key vectors by softmax pooling."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.query_score = nn.Linear(dim, num_heads)  # one pooling score per head, as in Fastformer
        self.key_score = nn.Linear(dim, num_heads)
        self.transform = nn.Linear(dim, dim)

    def _pool(self, x: torch.Tensor, score: nn.Linear) -> torch.Tensor:
        """Softmax-over-tokens pooling per head: ``(B, N, C) -> (B, 1, C)``."""
        B, N, C = x.shape
        alpha = (score(x) * self.scale).softmax(dim=1)  # (B, N, h)
        pooled = torch.einsum("bnh,bnhd->bhd", alpha, x.view(B, N, self.num_heads, -1))  # (B, h, d)
        return pooled.reshape(B, 1, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H * W, 3 * C).chunk(3, dim=-1)  # 3 x (B, N, C)
        p = k * self._pool(q, self.query_score)  # (B, N, C): keys times the global query
        u = v * self._pool(p, self.key_score)  # (B, N, C): values times the global key
        return (self.transform(u) + q).view(B, H, W, C)
