"""Interlaced sparse self-attention (ISA).

Paper: Huang et al. 2019, "Interlaced Sparse Self-Attention for Semantic Segmentation". Dense
attention is factorised into two sparse ones applied one after the other: a long-range step
among tokens that sit far apart (one from each local block: groups of P x P tokens spaced
``H / P`` apart), then a short-range step inside P x P local blocks. Together every token
reaches every other through one intermediate. Cost O(2 N P^2 C + 8 N C^2) (two q/k/v and output
projections).

The two steps are MaxViT's grid and block attention (``operators/maxvit.py``), which are the
same permute-attend-unpermute operations; ISA applies them back to back inside one mixer (each
with its own q/k/v and output projections, as ISA's two attention modules). Grids P does not
divide are padded and the padded keys masked, as there.
"""

from __future__ import annotations

from typing import Any

import torch

from operators.attention import ATTN_POS
from operators.base import TokenMixer
from operators.maxvit import MaxVitBlockAttention, MaxVitGridAttention
from operators.registry import MIXERS


@MIXERS.register("isa")
class InterlacedSparseAttention(TokenMixer):
    """ISA: long-range (grid) attention, then short-range (block) attention, both P x P.

    ``(B, H, W, C) -> (B, H, W, C)``. Raises ``ValueError`` (one line) when ``check`` rejects the knobs.
    """

    supported_pos = ATTN_POS

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        window_size: int = 7,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        kw = dict(grid_size=grid_size, pos_encoding=pos_encoding, block_index=block_index,
                  num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "window_size": window_size})):
            raise ValueError(f"isa: {why}")
        self.long_range = MaxVitGridAttention(dim, **kw)
        self.short_range = MaxVitBlockAttention(dim, **kw)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        return MaxVitGridAttention.check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.short_range(self.long_range(x))  # (B, H, W, C)
