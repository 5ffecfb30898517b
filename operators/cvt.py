"""Convolutional-projection attention.

Paper: Wu et al. 2021, "CvT: Introducing Convolutions to Vision Transformers". Queries, keys
and values come from a depthwise k x k convolution + BatchNorm of the token map followed by a
linear projection; keys and values use stride ``kv_stride`` (the paper's "squeezed" projection),
so the cost is O(N^2 C / s^2 + N C k^2 + N C^2) for N tokens, C channels and stride s.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer, attend, merge_heads, pad_to_cover, split_heads
from operators.registry import MIXERS


def _dw_bn(dim: int, kernel_size: int, stride: int) -> nn.Sequential:
    """CvT's "dw_bn" projection: depthwise conv (no bias) then BatchNorm, channels-first."""
    return nn.Sequential(
        nn.Conv2d(dim, dim, kernel_size, stride=stride, padding=kernel_size // 2, groups=dim, bias=False),
        nn.BatchNorm2d(dim),
    )


@MIXERS.register("conv_proj")
class ConvProjectionAttention(TokenMixer):
    """Multi-head attention with depthwise-conv projections for q, k, v (CvT)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        kernel_size: int = 3,
        kv_stride: int = 2,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.conv_q = _dw_bn(dim, kernel_size, 1)
        self.conv_k = _dw_bn(dim, kernel_size, kv_stride)
        self.conv_v = _dw_bn(dim, kernel_size, kv_stride)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.kernel_size, self.kv_stride = kernel_size, kv_stride

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k, s = knobs.get("kernel_size", 3), knobs.get("kv_stride", 2)
        if k < 1 or k % 2 == 0:
            return f"kernel_size={k} must be odd and positive (the projection keeps the map size)"
        if not 1 <= s <= k:  # a stride past the map side is allowed: keys/values shrink to one token
            return f"kv_stride={s} must be between 1 and kernel_size={k}, or some tokens never reach a key"
        return super().check(dim, grid_size, knobs)

    def _project(self, conv: nn.Module, proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, heads, n, d)`` through conv + BN, flatten and the linear."""
        y = conv(x).flatten(2).transpose(1, 2)  # (B, n, C)
        return split_heads(proj(y), self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        xc = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        q = self._project(self.conv_q, self.proj_q, xc)  # (B, heads, N, d)
        # pad the end of a side the stride leaves pixels of, so every token reaches a key
        xs = pad_to_cover(xc, self.kernel_size, self.kv_stride, self.kernel_size // 2)
        k = self._project(self.conv_k, self.proj_k, xs)  # (B, heads, N / s^2, d)
        v = self._project(self.conv_v, self.proj_v, xs)
        out = attend(q, k, v)  # (B, heads, N, d)
        return self.proj(merge_heads(out)).view(B, H, W, C)
