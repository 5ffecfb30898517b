"""Lambda layer.

Paper: Bello 2021, "LambdaNetworks: Modeling Long-Range Interactions Without Attention".
Context is summarised into linear functions (lambdas) applied to each query: a content lambda
from softmax-normalised keys times values, shared by all positions, and a position lambda from
a local ``r`` x ``r`` lambda convolution. No attention map is formed: cost O(N k v) for the
content lambda and O(N r^2 k v) for the position lambda, with N tokens, query/key depth k
(``dim_head``) and value depth v = C / heads, C channels.

This wraps ``timm.layers.LambdaLayer`` (NCHW; permuted from and to our channels-last layout;
intra-depth u = 1) and adds an output projection. It needs ``num_heads`` to divide the width
and an odd ``r`` (its conv is padded by ``r // 2``).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers.lambda_layer import LambdaLayer
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("lambda")
class LambdaMixer(TokenMixer):
    """Content + local position lambdas (timm ``LambdaLayer``) plus a projection."""

    supported_pos = frozenset()  # the position lambda is built in

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        dim_head: int = 16,
        r: int = 9,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "dim_head": dim_head, "r": r})):
            raise ValueError(f"lambda: {why}")
        self.attn = LambdaLayer(dim, dim, num_heads=num_heads, dim_head=dim_head, r=r, qkv_bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        r, k = knobs.get("r", 9), knobs.get("dim_head", 16)
        if r < 1 or r % 2 == 0:
            return f"r={r} (the lambda-convolution size) must be a positive odd number"
        if k < 1:
            return f"dim_head={k} must be positive"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(x.permute(0, 3, 1, 2))  # (B, C, H, W)
        return self.proj(y.permute(0, 2, 3, 1))  # (B, H, W, C)
