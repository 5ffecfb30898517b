"""Learned-query local attention (QnA).

Paper: Arar et al. 2022, "Learned Queries for Efficient Local Attention" (QnA). The queries are
not computed from the tokens: ``num_queries`` learned query vectors per head are shared by every
position, and each position's output is their attention over the keys and values of its k x k
neighbourhood (overlapping windows, stride 1), with a learned relative position bias per head
and offset. Multiple queries are concatenated and projected back to C. Cost O(N k^2 C L) time
and O(N k^2 C) memory (the unfolded keys and values) for L queries. Stride 1 only: the mixer
keeps the grid (QnA's strided variant downsamples). Border neighbourhoods are zero-padded and
the padded keys masked. Softmax through SDPA with the neighbourhood as the key axis. Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, attend
from operators.registry import MIXERS
from operators.window_attention import NEG_INF


def unfold_neighbourhoods(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, H, W, C) -> (B, N, k*k, C)``: each token's zero-padded k x k neighbourhood."""
    B, H, W, C = x.shape
    cols = F.unfold(x.permute(0, 3, 1, 2), k, padding=k // 2)  # (B, C*k*k, N)
    return cols.view(B, C, k * k, H * W).permute(0, 3, 2, 1)


@MIXERS.register("qna")
class LearnedQueryAttention(TokenMixer):
    """QnA: learned, position-shared queries attend over each token's k x k neighbourhood."""

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
        h, d, kk, N = self.num_heads, C // self.num_heads, self.k * self.k, H * W
        kv = unfold_neighbourhoods(self.kv(x), self.k)  # (B, N, k*k, 2C)
        k, v = kv.view(B, N, kk, 2, h, d).permute(3, 0, 4, 1, 2, 5).unbind(0)  # (B, h, N, k*k, d)
        valid = unfold_neighbourhoods(x.new_ones(1, H, W, 1), self.k)[0, :, :, 0]  # (N, k*k): 1 inside
        mask = self.rel_bias[:, None, None, :] + (1 - valid)[None, :, None, :] * NEG_INF  # (h, N, 1, k*k)
        q = self.queries.to(x.dtype)[None, :, None].expand(B, h, N, self.L, d)  # (B, h, N, L, d)
        out = attend(q, k, v, mask=mask)  # (B, h, N, L, d)
        return self.proj(out.permute(0, 2, 3, 1, 4).reshape(B, H, W, self.L * C))  # (B, H, W, C)
