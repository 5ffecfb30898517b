"""MobileViT block: local convolution, unfold into patches, global attention across patches, fold.

Paper: Mehta & Rastegari 2022, "MobileViT: Light-weight, General-purpose, and Mobile-friendly
Vision Transformer". A ``kernel_size`` conv-BN-SiLU and a 1x1 projection encode local context; the
map is unfolded into ``patch_size x patch_size`` patches and, for each of the P pixel positions of
a patch, ``transformer_depth`` transformer blocks attend across the N/P patches; the result is
folded back, projected (1x1 conv-BN-SiLU) and fused with the input (concatenation, conv-BN-SiLU).
Cost: O(N^2 C / P) attention + O(N C^2 (k^2 + depth * (4 + 2 * mlp_ratio))) projections and convs
for N tokens, C channels, patch area P = p^2.

This wraps ``timm.models.mobilevit.MobileVitBlock`` (channels-first; permuted around it) with
MobileViT's SiLU activations; its transformer blocks use timm's ``Attention``, which calls the
fused SDPA kernel. Grids the patch does not divide are bilinearly resized to the next multiple
and back, as in timm and the paper's code.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import ConvNormAct
from timm.models.byobnet import LayerFn
from timm.models.mobilevit import MobileVitBlock as TimmMobileVitBlock
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("mobilevit")
class MobileViTBlock(TokenMixer):
    """MobileViT's local-global-fusion block (timm ``MobileVitBlock``) behind the mixer interface."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        patch_size: int = 2,
        transformer_depth: int = 2,
        transformer_dim: int = 0,
        mlp_ratio: float = 2.0,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "patch_size": patch_size, "transformer_depth": transformer_depth,
                 "transformer_dim": transformer_dim, "kernel_size": kernel_size}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"mobilevit: {why}")
        layers = LayerFn(conv_norm_act=partial(ConvNormAct, act_layer=nn.SiLU), act=nn.SiLU)
        self.block = TimmMobileVitBlock(dim, dim, kernel_size=kernel_size, mlp_ratio=mlp_ratio,
                                        transformer_dim=transformer_dim or dim, transformer_depth=transformer_depth,
                                        patch_size=patch_size, num_heads=num_heads, layers=layers)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        p = knobs.get("patch_size", 2)
        if p < 1 or p > min(grid_size):
            return f"patch_size={p} must be between 1 and the feature-map side {min(grid_size)}"
        if knobs.get("transformer_depth", 2) < 1:
            return f"transformer_depth={knobs.get('transformer_depth')} must be at least 1"
        k = knobs.get("kernel_size", 3)
        if k < 1 or k % 2 == 0:
            return f"kernel_size={k} must be a positive odd number"
        heads, tdim = knobs.get("num_heads", 4), knobs.get("transformer_dim", 0) or dim
        if tdim < 0 or heads <= 0 or tdim % heads:
            return f"num_heads={heads} must be positive and divide the transformer width {tdim}"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x.permute(0, 3, 1, 2))  # (B, C, H, W)
        return y.permute(0, 2, 3, 1)  # (B, H, W, C)
