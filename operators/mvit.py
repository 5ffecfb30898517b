"""Multiscale pooling attention: queries, keys and values pooled before attention.

Papers: Fan et al. 2021, "Multiscale Vision Transformers" (MViT) and Li et al. 2022, "MViTv2:
Improved Multiscale Vision Transformers for Classification and Detection". Q, K and V are each
pooled over the grid (a depthwise ``pool_kernel`` conv shared across heads followed by a LayerNorm,
or an average / max pool); keys and values with stride ``kv_stride``, queries with stride 1 (the
grid-in, grid-out contract: MViT pools queries with stride 2 only where a stage downsamples, which
here is the downsampler's job). MViTv2's residual pooling adds the pooled query to the output.
Cost: O(N^2 C / s^2 + N C k^2) for N tokens, C channels, kv stride s and pooling kernel k.

Parameter names and the computation follow ``timm.models.mvitv2.MultiScaleAttention`` (without
class token or decomposed relative positions; a test loads its weights and compares outputs), but
timm materialises the attention matrix, so the attention here goes through the fused SDPA kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer, attend, merge_heads
from operators.registry import MIXERS

POOL_MODES = ("conv", "avg", "max")


def _pool(mode: str, channels: int, kernel: int, stride: int) -> nn.Module:
    if mode == "conv":
        return nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False)
    op = nn.MaxPool2d if mode == "max" else nn.AvgPool2d
    return op(kernel, stride, kernel // 2)


@MIXERS.register("mvit_pool")
class MultiScalePoolingAttention(TokenMixer):
    """MViTv2's pooling attention: pooled Q (stride 1), K and V (stride ``kv_stride``), residual pooling."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        kv_stride: int = 2,
        pool_kernel: int = 3,
        pool_mode: str = "conv",
        residual_pooling: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "kv_stride": kv_stride, "pool_kernel": pool_kernel, "pool_mode": pool_mode}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"mvit_pool: {why}")
        self.num_heads, self.residual_pooling = num_heads, residual_pooling
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pool_q = _pool(pool_mode, head_dim, pool_kernel, 1) if pool_kernel > 1 else None
        self.pool_k = _pool(pool_mode, head_dim, pool_kernel, kv_stride) if pool_kernel > 1 or kv_stride > 1 else None
        self.pool_v = _pool(pool_mode, head_dim, pool_kernel, kv_stride) if self.pool_k is not None else None
        conv = pool_mode == "conv"
        self.norm_q = nn.LayerNorm(head_dim) if conv and self.pool_q is not None else None
        self.norm_k = nn.LayerNorm(head_dim) if conv and self.pool_k is not None else None
        self.norm_v = nn.LayerNorm(head_dim) if conv and self.pool_v is not None else None

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        mode = knobs.get("pool_mode", "conv")
        if mode not in POOL_MODES:
            return f"pool_mode={mode!r} is not one of {', '.join(POOL_MODES)}"
        s = knobs.get("kv_stride", 2)
        if s < 1 or s > min(grid_size):
            return f"kv_stride={s} must be between 1 and the feature map side {min(grid_size)}"
        k = knobs.get("pool_kernel", 3)
        if k < 1 or k % 2 == 0:
            return f"pool_kernel={k} must be a positive odd number"
        return super().check(dim, grid_size, knobs)

    def _pooled(self, t: torch.Tensor, pool: nn.Module | None, norm: nn.Module | None, H: int, W: int) -> torch.Tensor:
        """``(B, h, N, d) -> (B, h, n, d)``: pool each head's map (the same filter for every head)."""
        if pool is not None:
            B, h, _, d = t.shape
            t = pool(t.reshape(B * h, H, W, d).permute(0, 3, 1, 2))  # (B*h, d, H', W')
            t = t.flatten(2).transpose(1, 2).reshape(B, h, -1, d)
        return norm(t) if norm is not None else t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, N, d)
        q = self._pooled(q, self.pool_q, self.norm_q, H, W)  # (B, heads, N, d)
        k = self._pooled(k, self.pool_k, self.norm_k, H, W)  # (B, heads, n, d)
        v = self._pooled(v, self.pool_v, self.norm_v, H, W)  # (B, heads, n, d)
        out = attend(q, k, v)  # (B, heads, N, d)
        if self.residual_pooling:
            out = out + q
        return self.proj(merge_heads(out)).view(B, H, W, C)
