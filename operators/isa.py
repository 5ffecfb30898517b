"""Interlaced sparse self-attention (ISA).

Paper: Huang et al. 2019, "Interlaced Sparse Self-Attention for Semantic Segmentation". Dense
attention is factorised into two sparse ones applied one after the other, each with its own
q/k/v and output projections: a *long-range* step among the tokens ``P`` apart (the tokens with
the same row and column index modulo ``P``: one from each P x P block, ``ceil(H/P) x ceil(W/P)``
per group), then a *short-range* step inside the P x P blocks. Together every token reaches
every other through one intermediate. Cost O(N (H W / P^2 + P^2) C + 8 N C^2).

The layouts are the grid and window partitions of ``operators/maxvit.py`` and
``operators/window_attention.py`` (a grid partition into ``ceil(H/P)`` groups per axis puts
tokens ``P`` apart together). Grids P does not divide are zero-padded to a multiple of P once,
for both steps, and the padded keys masked (``maxvit.padding_mask``). Attention-internal
position encodings act inside each step's groups (``ceil(H/P) x ceil(W/P)`` for the long-range
one, sized from ``grid_size``; P x P for the short-range one). Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.attention import ATTN_POS
from operators.base import TokenMixer, attend, make_attn_pos, merge_heads
from operators.maxvit import Partition, grid_partition, grid_reverse, padding_mask
from operators.registry import MIXERS
from operators.window_attention import window_partition, window_reverse


class _GroupAttention(nn.Module):
    """q/k/v, output projection and position encoding of one ISA step."""

    def __init__(self, dim: int, num_heads: int, region: tuple[int, int], pos_encoding: str, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=region)

    def forward(self, x: torch.Tensor, part: Partition, rev: Any, ps: tuple[int, int],
                valid: tuple[int, int]) -> torch.Tensor:
        """Attention inside the ``part`` groups of the padded ``x (B, Hp, Wp, C)``; same shape out."""
        B, Hp, Wp, C = x.shape
        groups = part(self.qkv(x), ps)  # (B*nW, n, 3C)
        nWB, n, _ = groups.shape
        q, k, v = groups.view(nWB, n, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = padding_mask(part, Hp, Wp, ps, valid, x.device)  # (nW, 1, 1, n) or None
        if mask is not None:
            mask = mask.repeat(B, 1, 1, 1)
        out = attend(q, k, v, self.pos, ps, mask)  # (B*nW, heads, n, d)
        return rev(self.proj(merge_heads(out)), ps, Hp, Wp)  # (B, Hp, Wp, C)


@MIXERS.register("isa")
class InterlacedSparseAttention(TokenMixer):
    """ISA: long-range attention among tokens P apart, then short-range attention in P x P blocks.

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
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "window_size": window_size})):
            raise ValueError(f"isa: {why}")
        self.window = window_size
        P = min(window_size, *grid_size)
        self.long_range = _GroupAttention(dim, num_heads, self.long_groups(tuple(grid_size), P), pos_encoding,
                                          qkv_bias)
        self.short_range = _GroupAttention(dim, num_heads, (P, P), pos_encoding, qkv_bias)

    @staticmethod
    def long_groups(grid: tuple[int, int], P: int) -> tuple[int, int]:
        """Tokens per long-range group along each axis: ``ceil(H / P), ceil(W / P)``."""
        return (-(-grid[0] // P), -(-grid[1] // P))

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        w = knobs.get("window_size", 7)
        if w < 1:
            return f"window_size={w} must be positive"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        P = min(self.window, H, W)
        groups = self.long_groups((H, W), P)
        Hp, Wp = P * groups[0], P * groups[1]
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))  # (B, Hp, Wp, C)
        x = self.long_range(x, grid_partition, grid_reverse, groups, (H, W))  # tokens P apart
        x = self.short_range(x, window_partition, window_reverse, (P, P), (H, W))  # P x P blocks
        return x[:, :H, :W].contiguous()  # (B, H, W, C)
