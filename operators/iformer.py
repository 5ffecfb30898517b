"""The inception mixer (iFormer).

Paper: Si et al. 2022, "Inception Transformer" (iFormer; not timm's ``iformer``, which is a
different model). The channels are split: a high-frequency part goes through two parallel
convolutional paths (half of it: 1x1 -> depthwise 3x3 -> GELU; the other half: max-pool 3x3 ->
1x1 -> GELU; each path doubles its channels, as the official code), and a low-frequency part
(``attn_ratio`` of the channels) through global attention on an ``pool_size``-times average-
pooled grid (ceil; at most the map side), upsampled back (nearest). The concatenation is fused by ``x + dwconv3x3(x)`` and a
1x1 projection to C. Cost O(N^2 C_l / p^4 + N C_h^2 + N C^2) for N tokens, C_l = attn_ratio C,
C_h = C - C_l. The attention branch is ``operators.attention.GlobalAttention`` on the pooled
grid, so it takes the same attention-internal position encodings (sized for the pooled grid).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.attention import ATTN_POS, GlobalAttention
from operators.base import TokenMixer
from operators.registry import MIXERS


def pooled_size(grid: tuple[int, int], pool: int) -> tuple[int, int]:
    """The grid after ``pool``-times average pooling with partial windows kept (ceil)."""
    return (-(-grid[0] // pool), -(-grid[1] // pool))


@MIXERS.register("inception")
class InceptionMixer(TokenMixer):
    """iFormer's inception mixer: max-pool and depthwise-conv paths in parallel with pooled
    global attention on a channel split, then a depthwise-conv fusion and a projection.

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
        num_heads: int = 2,
        attn_ratio: float = 0.5,
        pool_size: int = 2,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "attn_ratio": attn_ratio, "pool_size": pool_size}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"inception: {why}")
        low, high = self.split(dim, attn_ratio)
        half = high // 2
        self.low, self.high, self.half, self.pool_size = low, high, half, pool_size
        self.conv_path = nn.Sequential(nn.Conv2d(half, 2 * half, 1, bias=False),
                                       nn.Conv2d(2 * half, 2 * half, 3, padding=1, groups=2 * half, bias=False),
                                       nn.GELU())
        self.pool_path = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(high - half, 2 * half, 1),
                                       nn.GELU())
        pool = min(pool_size, *grid_size)
        self.attn = GlobalAttention(low, grid_size=pooled_size(tuple(grid_size), pool),
                                    pos_encoding=pos_encoding, num_heads=num_heads, qkv_bias=qkv_bias)
        fused = low + 4 * half
        self.fuse = nn.Conv2d(fused, fused, 3, padding=1, groups=fused, bias=False)
        self.proj = nn.Conv2d(fused, dim, 1)

    @staticmethod
    def split(dim: int, attn_ratio: float) -> tuple[int, int]:
        """(attention channels, convolution channels)."""
        low = round(dim * attn_ratio)
        return low, dim - low

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        ratio, heads = knobs.get("attn_ratio", 0.5), knobs.get("num_heads", 2)
        pool = knobs.get("pool_size", 2)
        if not 0 < ratio < 1:
            return f"attn_ratio={ratio} must be strictly between 0 and 1 (both branches need channels)"
        low, high = cls.split(dim, ratio)
        if heads <= 0 or low % heads:
            return f"num_heads={heads} must divide the {low} attention channels (attn_ratio={ratio} of {dim})"
        if high < 2 or high % 2:
            return f"the {high} convolution channels (1 - attn_ratio of {dim}) must be even and at least 2"
        if pool < 1:
            return f"pool_size={pool} must be positive"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        img = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        hi_conv = self.conv_path(img[:, : self.half])  # (B, 2 half, H, W)
        hi_pool = self.pool_path(img[:, self.half: self.high])  # (B, 2 half, H, W)
        pool = min(self.pool_size, H, W)  # a pool larger than the map pools it whole
        lo = F.avg_pool2d(img[:, self.high:], pool, ceil_mode=True)  # (B, low, h, w)
        lo = self.attn(lo.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, low, h, w)
        lo = F.interpolate(lo, size=(H, W), mode="nearest")  # (B, low, H, W)
        y = torch.cat([hi_conv, hi_pool, lo], dim=1)  # (B, low + 4 half, H, W)
        return self.proj(y + self.fuse(y)).permute(0, 2, 3, 1)  # (B, H, W, C)
