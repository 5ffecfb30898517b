"""Outlook attention: each token predicts the attention weights of its own neighbourhood.

Paper: Yuan et al. 2022, "VOLO: Vision Outlooker for Visual Recognition". A linear layer maps
each (pooled) token straight to the ``k^2 x k^2`` attention weights of its k x k window, no
query-key products; the weighted values are folded back onto the map. Cost: O(N k^4 C / s^2 +
N k^2 C) for N tokens, C channels, kernel k and stride s (weights are made on the s-pooled map).

This wraps ``timm.models.volo.OutlookAttention``, which is already channels-last ``(B, H, W, C)``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.volo import OutlookAttention as TimmOutlookAttention

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("outlook")
class OutlookAttention(TokenMixer):
    """VOLO's outlook attention (timm's implementation behind the mixer interface)."""

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        kernel_size: int = 3,
        stride: int = 2,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.attn = TimmOutlookAttention(dim, num_heads, kernel_size=kernel_size, padding=kernel_size // 2,
                                         stride=stride, qkv_bias=qkv_bias)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k, s = knobs.get("kernel_size", 3), knobs.get("stride", 2)
        if k < 1 or k % 2 == 0:
            return f"kernel_size={k} must be odd and positive (the window is centred on its token)"
        if not 1 <= s <= k:
            return f"stride={s} must be between 1 and kernel_size={k}, or some tokens get no output"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)  # (B, H, W, C)
