"""Learned-query local attention (QnA).

Paper: Arar et al. 2022, "Learned Queries for Efficient Local Attention" (QnA). The queries are
not computed from the tokens: ``num_queries`` learned query vectors per head are shared by every
position, and each position's output is their attention over the keys and values of its k x k
neighbourhood (overlapping windows, stride 1), with a learned relative position bias per head
and offset. Multiple queries are concatenated and projected back to C. Cost O(N k^2 C L) time
and O(N k^2 (C + h L)) memory (the unfolded values and logits) for L queries. Stride 1 only: the mixer
keeps the grid (QnA's strided variant downsamples). Border neighbourhoods are zero-padded and
the padded keys masked. Not in timm.

The softmax is explicit rather than SDPA: because the queries are shared, a logit depends on the
key only (one scalar per key, head and query, computed once with a 1x1 projection), so each
token's weights are a softmax over the k^2 unfolded scalars plus the bias; SDPA would instead
run N separate (L x k^2) problems on k^2-times unfolded keys (slower; ``benchmarks/mixers.py``
measures this mixer). The weights are N x k^2 per head, never N x N.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS
from operators.window_attention import NEG_INF


@MIXERS.register("qna")
class LearnedQueryAttention(TokenMixer):
    """QnA: learned, position-shared queries attend over each token's k x k neighbourhood.

    ``(B, H, W, C) -> (B, H, W, C)``. Raises ``ValueError`` (one line) when ``check`` rejects the knobs.
    """

    supported_pos = frozenset()  # the relative position bias is built in

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        kernel_size: int = 7,
        num_queries: int = 1,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "kernel_size": kernel_size, "num_queries": num_queries}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"qna: {why}")
        self.num_heads, self.k, self.L = num_heads, kernel_size, num_queries
        d = dim // num_heads
        self.queries = nn.Parameter(torch.randn(num_heads, num_queries, d) * d ** -0.5)  # (h, L, d)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.rel_bias = nn.Parameter(torch.zeros(num_heads, kernel_size * kernel_size))  # (h, k*k)
        self.proj = nn.Linear(num_queries * dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k, L = knobs.get("kernel_size", 7), knobs.get("num_queries", 1)
        if k < 1 or k % 2 == 0:
            return f"kernel_size={k} must be a positive odd number"
        if L < 1:
            return f"num_queries={L} must be positive"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        h, d, k, L, N = self.num_heads, C // self.num_heads, self.k, self.L, H * W
        keys, v = self.kv(x).chunk(2, dim=-1)  # (B, H, W, C) each
        q = self.queries.to(x.dtype) * d ** -0.5  # (h, L, d)
        logits = torch.einsum("byxhd,hld->bhlyx", keys.reshape(B, H, W, h, d), q)  # (B, h, L, H, W): per key
        logits = F.unfold(logits.reshape(B, h * L, H, W), k, padding=k // 2).view(B, h, L, k * k, N)
        inside = F.unfold(x.new_ones(1, 1, H, W), k, padding=k // 2).view(1, 1, 1, k * k, N)
        logits = logits + self.rel_bias.to(x.dtype)[None, :, None, :, None] + (1 - inside) * NEG_INF
        attn = logits.softmax(dim=3)  # (B, h, L, k*k, N): each token's neighbourhood
        vu = F.unfold(v.permute(0, 3, 1, 2), k, padding=k // 2).view(B, h, d, k * k, N)
        # an einsum, not a broadcast multiply and sum, so the FLOP counter sees its N k^2 C L MACs
        out = torch.einsum("bhlon,bhdon->bhldn", attn, vu)  # (B, h, L, d, N)
        return self.proj(out.permute(0, 4, 2, 1, 3).reshape(B, H, W, L * C))  # (B, H, W, C)
