"""Cross-covariance attention: attention across channels instead of tokens.

Paper: El-Nouby et al. 2021, "XCiT: Cross-Covariance Image Transformers". Each head forms the
``d x d`` softmax of the L2-normalised key-query cross-covariance (with a learned temperature)
and mixes the channels of the values with it, so the cost is linear in the token count:
O(N C^2 / h) for N tokens, C channels and h heads.

This wraps ``timm.models.xcit.XCA`` (``(B, N, C)``; the grid is flattened around it).
"""

from __future__ import annotations

import torch
from timm.models.xcit import XCA

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("xca")
class CrossCovarianceAttention(TokenMixer):
    """XCiT's cross-covariance attention (timm's XCA behind the mixer interface)."""

    no_weight_decay_params = ("attn.temperature",)

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.attn = XCA(dim, num_heads=num_heads, qkv_bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        return self.attn(x.reshape(B, H * W, C)).view(B, H, W, C)
