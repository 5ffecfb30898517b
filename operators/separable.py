"""Separable self-attention (MobileViTv2).

Paper: Mehta & Rastegari 2022, "Separable Self-attention for Mobile Vision Transformers"
(MobileViTv2). The map is unfolded into ``patch_size`` x ``patch_size`` patches; for each of
the P pixel positions of a patch, a softmax over the N/P patches of one learned score per token
pools the keys into a context vector, which multiplies ReLU(values) element-wise. No attention
map is formed: cost O(N C^2) for the projections and O(N C) for the mixing, N tokens, C channels.

This wraps ``timm.models.mobilevit.LinearSelfAttention`` (which takes ``(B, C, P, N)``;
unfolded from and folded back to our channels-last layout as timm's MobileVitV2Block does).
Grids the patch does not divide are bilinearly resized up to the next multiple (as
MobileViTv2 does) and the output resized back to the input grid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.mobilevit import LinearSelfAttention

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("separable")
class SeparableSelfAttention(TokenMixer):
    """MobileViTv2's separable self-attention over patches (timm ``LinearSelfAttention``)."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        patch_size: int = 2,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"patch_size": patch_size})):
            raise ValueError(f"separable: {why}")
        self.patch_size = patch_size
        self.attn = LinearSelfAttention(dim, bias=bias)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        p = knobs.get("patch_size", 2)
        if p < 1 or p > min(grid_size):
            return f"patch_size={p} must be between 1 and the feature-map side {min(grid_size)}"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        p = self.patch_size
        Hp, Wp = -(-H // p) * p, -(-W // p) * p
        x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
        if (Hp, Wp) != (H, W):
            x = F.interpolate(x, size=(Hp, Wp), mode="bilinear", align_corners=True)
        nh, nw = Hp // p, Wp // p
        x = x.reshape(B, C, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4).reshape(B, C, p * p, nh * nw)  # (B, C, P, N)
        y = self.attn(x)  # (B, C, P, N)
        y = y.reshape(B, C, p, p, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(B, C, Hp, Wp)  # fold
        if (Hp, Wp) != (H, W):
            y = F.interpolate(y, size=(H, W), mode="bilinear", align_corners=True)
        return y.permute(0, 2, 3, 1)  # (B, H, W, C)
