"""Double attention (A^2-Nets).

Paper: Chen et al. 2018, "A^2-Nets: Double Attention Networks". Two attention steps through a
small set of global descriptors: *gather* — ``n`` attention maps, each a softmax over all
positions, pool ``m``-channel features into ``n`` global descriptors ``G (n, m)``; *distribute*
— every position takes a softmax over the ``n`` descriptors and reads their mix. Cost
O(N C (m + 2 n) + N n m + N m C), linear in N.

Both steps are softmax attention with ``scale = 1`` and go through the fused SDPA kernel: the
gather logits ``B = x W_b`` (one map per descriptor, a softmax over positions) are
``q k^T`` with the ``n`` rows of ``W_b`` as learned queries and the tokens as keys; the
distribute logits ``V = x W_v`` (a softmax over descriptors) have the tokens as queries and the
rows of ``W_v`` as keys. The logit convolutions have no bias (a bias is constant over the
positions of a gather map, so it cancels there). Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


@MIXERS.register("double_attention")
class DoubleAttention(TokenMixer):
    """A^2 block: gather ``n`` global descriptors by attention, distribute them by attention.

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
        feature_ratio: float = 0.25,
        descriptor_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        knobs = {"feature_ratio": feature_ratio, "descriptor_ratio": descriptor_ratio}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"double_attention: {why}")
        m, n = max(round(dim * feature_ratio), 1), max(round(dim * descriptor_ratio), 1)
        self.features = nn.Linear(dim, m)  # A: (B, N, m)
        self.gather_q = nn.Parameter(torch.randn(n, dim) * dim ** -0.5)  # rows of W_b
        self.distribute_k = nn.Parameter(torch.randn(n, dim) * dim ** -0.5)  # rows of W_v
        self.proj = nn.Linear(m, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        for name in ("feature_ratio", "descriptor_ratio"):
            r = knobs.get(name, 0.25)
            if not 0 < r <= 1:
                return f"{name}={r} must be in (0, 1]"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        tokens = x.reshape(B, 1, H * W, C)  # (B, 1, N, C): one head
        feats = self.features(tokens)  # (B, 1, N, m)
        q = self.gather_q.to(x.dtype).expand(B, 1, -1, -1)  # (B, 1, n, C)
        desc = F.scaled_dot_product_attention(q, tokens, feats, scale=1.0)  # gather: (B, 1, n, m)
        k = self.distribute_k.to(x.dtype).expand(B, 1, -1, -1)  # (B, 1, n, C)
        out = F.scaled_dot_product_attention(tokens, k, desc, scale=1.0)  # distribute: (B, 1, N, m)
        return self.proj(out).view(B, H, W, C)
