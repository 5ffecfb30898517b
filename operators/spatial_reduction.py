"""Spatial-reduction attention and its pooled linear variant.

Papers: Wang et al. 2021, "Pyramid Vision Transformer" (PVT) and Wang et al. 2022,
"PVT v2: Improved Baselines with Pyramid Vision Transformer". Keys and values come from a
grid reduced by ``sr_ratio`` (a strided conv) or pooled to ``pool_size`` x ``pool_size``
(the linear variant), so the cost is O(N^2 C / R^2), or O(N P^2 C) when pooled.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer, attend, merge_heads, pad_to_cover, split_heads
from operators.registry import MIXERS


class _ReducedKVAttention(TokenMixer):
    """Shared body: queries from every token, keys/values from a reduced grid."""

    supported_pos = frozenset()

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, h, w)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q = split_heads(self.q(x).view(B, H * W, C), self.num_heads)  # (B, heads, N, d)
        r = self.reduce(x.permute(0, 3, 1, 2))  # (B, C, h, w)
        r = self.norm(r.flatten(2).transpose(1, 2))  # (B, n, C)
        k, v = self.kv(r).chunk(2, dim=-1)
        out = attend(q, split_heads(k, self.num_heads), split_heads(v, self.num_heads))
        return self.proj(merge_heads(out)).view(B, H, W, C)


@MIXERS.register("sra")
class SpatialReductionAttention(_ReducedKVAttention):
    """Keys/values from a grid shrunk by a strided ``sr_ratio`` conv (PVT / PVTv2)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        sr_ratio: int = 2,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio) if sr_ratio > 1 else nn.Identity()
        self.norm = nn.LayerNorm(dim) if sr_ratio > 1 else nn.Identity()
        self.sr_ratio = sr_ratio

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        sr = knobs.get("sr_ratio", 2)
        if sr < 1 or sr > min(grid_size):
            return f"sr_ratio={sr} must be between 1 and the feature map side {min(grid_size)}"
        return super().check(dim, grid_size, knobs)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        # a side sr_ratio does not divide is zero-padded, so its last tokens still reach a key
        return self.sr(pad_to_cover(x, self.sr_ratio, self.sr_ratio))  # (B, C, ceil(H/R), ceil(W/R))


@MIXERS.register("sra_linear")
class LinearSpatialReductionAttention(_ReducedKVAttention):
    """Keys/values from the grid average-pooled to ``pool_size`` squared tokens (PVTv2-li)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        pool_size: int = 7,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.sr = nn.Conv2d(dim, dim, 1)
        self.norm = nn.Sequential(nn.LayerNorm(dim), nn.GELU())

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        return self.sr(self.pool(x))
