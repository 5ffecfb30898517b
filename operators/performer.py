"""Performer attention with FAVOR+ positive orthogonal random features.

Paper: Choromanski et al. 2021, "Rethinking Attention with Performers". The softmax kernel
``exp(q.k / sqrt(d))`` is approximated by ``phi(q).phi(k)`` with positive random features
``phi(x) = exp(w.x - |x|^2 / 2) / sqrt(m)`` over ``m = num_features`` orthogonal Gaussian
directions ``w``, so attention is computed right to left: ``phi(Q) (phi(K)^T V)`` normalised by
``phi(Q) (phi(K)^T 1)``. Cost O(N m C) for N tokens and C channels (linear in N).

The random directions are a buffer (saved with the model), drawn at construction and redrawn
only by an explicit ``redraw_features()`` call, so the module is deterministic in eval and train.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from operators.base import TokenMixer, merge_heads
from operators.registry import MIXERS


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(m, d)`` random directions: orthogonal blocks with Gaussian (chi-distributed) row norms."""
    blocks = []
    for _ in range(math.ceil(m / d)):  # at most ceil(m / d) QR factorisations, not a loop over tokens
        q, r = torch.linalg.qr(torch.randn(d, d, generator=generator))
        blocks.append((q * torch.sign(torch.diagonal(r))).T)  # sign fix: Haar-uniform rotation
    w = torch.cat(blocks)[:m]  # (m, d) orthonormal rows within each block
    norms = torch.randn(m, d, generator=generator).norm(dim=1, keepdim=True)
    return w * norms


def positive_features(x: torch.Tensor, w: torch.Tensor, is_query: bool, eps: float = 1e-6) -> torch.Tensor:
    """FAVOR+ ``phi(x)`` for ``x (B, h, N, d)`` already scaled by ``d^-1/4``: ``(B, h, N, m)``."""
    proj = x @ w.T  # (B, h, N, m)
    sq = x.square().sum(-1, keepdim=True) / 2  # (B, h, N, 1)
    # subtracting a max keeps exp finite; it cancels in the normalisation (per query row for q,
    # one constant per head for k)
    stab = proj.amax(-1, keepdim=True) if is_query else proj.amax((-2, -1), keepdim=True)
    return (torch.exp(proj - sq - stab.detach()) + eps) / math.sqrt(w.shape[0])


@MIXERS.register("performer")
class PerformerAttention(TokenMixer):
    """Linear-time softmax-kernel attention with positive orthogonal random features (FAVOR+)."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        num_features: int = 64,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "num_features": num_features})):
            raise ValueError(f"performer: {why}")
        self.num_heads, self.num_features = num_heads, num_features
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("features", orthogonal_gaussian(num_features, self.head_dim))

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        m = knobs.get("num_features", 64)
        if m < 1:
            return f"num_features={m} must be positive"
        return super().check(dim, grid_size, knobs)

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw new random directions (Performer redraws them periodically during training)."""
        w = orthogonal_gaussian(self.num_features, self.head_dim, generator)
        self.features.copy_(w.to(self.features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d)
        scale = self.head_dim ** -0.25
        w = self.features.to(q.dtype)
        qf = positive_features(q * scale, w, is_query=True)  # (B, h, N, m)
        kf = positive_features(k * scale, w, is_query=False)  # (B, h, N, m)
        kv = kf.transpose(-2, -1) @ v  # (B, h, m, d)
        norm = qf @ kf.sum(-2, keepdim=True).transpose(-2, -1)  # (B, h, N, 1)
        out = (qf @ kv) / norm  # (B, h, N, d)
        return self.proj(merge_heads(out)).view(B, H, W, C)
