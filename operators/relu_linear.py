"""ReLU linear attention with multi-scale tokens (EfficientViT's LiteMLA).

Paper: Cai et al. 2023, "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense
Prediction". Softmax is replaced by a ReLU kernel, so attention is computed right to left:
``ReLU(Q) (ReLU(K)^T [V, 1])`` and normalised by the last column. Q/K/V are also aggregated by
a depthwise ``scale`` x ``scale`` conv (+ grouped 1x1) to give a second set of heads of
multi-scale tokens. Cost O(N C d) for N tokens, C channels and head width d (linear in N).

This wraps ``timm.models.efficientvit_mit.LiteMLA`` (NCHW; permuted from and to our
channels-last layout) as EfficientViT builds it: no norm on qkv, BatchNorm after the output
projection, ``heads = dim / head_dim``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.efficientvit_mit import LiteMLA
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("relu_linear")
class ReLULinearAttention(TokenMixer):
    """EfficientViT's lightweight multi-scale ReLU linear attention (timm ``LiteMLA``)."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        head_dim: int = 16,
        scale: int = 5,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"head_dim": head_dim, "scale": scale})):
            raise ValueError(f"relu_linear: {why}")
        self.attn = LiteMLA(dim, dim, dim=head_dim, norm_layer=(None, nn.BatchNorm2d),
                            scales=(scale,) if scale else ())

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        d, s = knobs.get("head_dim", 16), knobs.get("scale", 5)
        if d < 1 or dim % d:
            return f"head_dim={d} must be positive and divide the width {dim}"
        if s < 0 or (s and s % 2 == 0):
            return f"scale={s} (the multi-scale aggregation kernel) must be odd, or 0 for none"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
