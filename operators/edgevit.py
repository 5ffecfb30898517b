"""Local-global-local (LGL) mixing of EdgeViT.

Paper: Pan et al. 2022, "EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision
Transformers". Three steps: *local aggregation* (1x1 -> depthwise 5x5 -> 1x1, the same operator
as UniFormer's local MHRA, reused from ``operators/uniformer.py``); *global sparse attention*
among delegate tokens, one sampled from every r x r window (stride-r subsampling, EdgeViT's
``AvgPool2d(1, r)``); *local propagation* of the delegates back to their windows by a depthwise
transposed r x r convolution, then LayerNorm and a projection. EdgeViT applies the first two
as separate residual sub-blocks; as one mixer the output is ``l + g`` with ``l = local(x)`` and
``g = global(LN(x + l))``, which the block's residual turns into ``x + l + g`` (the residual
stream of the two sub-blocks, without the MLP between them). Cost O(N^2 C / r^4 + N C^2 * 5 +
N C (25 + r^2)). Grids r does not divide keep the partial windows (ceil) and crop back. Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer, attend, merge_heads, split_heads
from operators.registry import MIXERS
from operators.uniformer import LocalRelationAggregator


@MIXERS.register("edgevit_lgl")
class LocalGlobalLocal(TokenMixer):
    """EdgeViT LGL: local aggregation, sparse global attention among delegates, local propagation.

    ``(B, H, W, C) -> (B, H, W, C)``. Raises ``ValueError`` (one line) when ``check`` rejects the knobs.
    """

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        sample_ratio: int = 2,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "sample_ratio": sample_ratio})):
            raise ValueError(f"edgevit_lgl: {why}")
        self.num_heads, self.r = num_heads, sample_ratio
        self.local = LocalRelationAggregator(dim, grid_size=grid_size, kernel_size=5)
        self.norm_in = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.propagate = nn.ConvTranspose2d(dim, dim, sample_ratio, stride=sample_ratio, groups=dim)
        self.norm_out = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        r = knobs.get("sample_ratio", 2)
        if r < 1:
            return f"sample_ratio={r} must be positive"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        loc = self.local(x)  # (B, H, W, C)
        s = self.norm_in(x + loc)[:, :: self.r, :: self.r]  # delegates (B, h, w, C), h = ceil(H / r)
        h, w = s.shape[1:3]
        q, k, v = self.qkv(s).reshape(B, h * w, 3, C).unbind(2)  # (B, n, C) each
        g = attend(*(split_heads(t, self.num_heads) for t in (q, k, v)))  # (B, heads, n, d)
        g = merge_heads(g).transpose(1, 2).reshape(B, C, h, w)  # (B, C, h, w)
        g = self.propagate(g)[:, :, :H, :W].permute(0, 2, 3, 1)  # (B, H, W, C)
        return loc + self.proj(self.norm_out(g))  # (B, H, W, C)
