"""Softmax-free attention (SOFT).

Paper: Lu et al. 2021, "SOFT: Softmax-free Transformer with Linear Complexity". The softmax of
dot products is replaced by a Gaussian kernel ``A_ij = exp(-|q_i - q_j|^2 / (2 sqrt(d)))`` with
shared query/key projection (a symmetric, positive semi-definite matrix), and A is approximated
through ``m = s^2`` landmarks ``Q~`` (the query grid adaptively average-pooled to
``landmark_size`` s x s; SOFT's per-stage reduction ratios 8, 4, 2, 1 on 56, 28, 14, 7 give 7 x 7
landmarks at every stage):
``A ~ A(Q, Q~) pinv(A(Q~, Q~)) A(Q~, Q)``, multiplied right to left with V, so the cost is
O(N m C + m^2 C + m^3) per head instead of O(N^2 C). No row normalisation (that is the point:
no softmax). The Moore-Penrose inverse is computed iteratively, batched over images and heads:
SOFT uses Newton-Raphson steps ``Z <- 2 Z - Z A Z``; this uses ``pinv_iters`` steps of the
third-order variant of the same iteration from Nystromformer (Xiong et al. 2021),
``Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4``, which needs fewer steps. With
``landmark_size`` at least the grid side (every token a landmark) the product reduces to exact Gaussian-kernel attention
``A V`` (a test checks). Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer, merge_heads, split_heads
from operators.registry import MIXERS


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``exp(-|a_i - b_j|^2 / (2 sqrt(d)))`` for ``a (..., n, d)``, ``b (..., m, d)``: ``(..., n, m)``."""
    d = a.shape[-1]
    sq = a.square().sum(-1, keepdim=True) + b.square().sum(-1)[..., None, :] - 2 * a @ b.transpose(-2, -1)
    return torch.exp(-sq.clamp_min(0) / (2 * d ** 0.5))


def iterative_pinv(a: torch.Tensor, iters: int) -> torch.Tensor:
    """Moore-Penrose inverse of ``a (..., m, m)`` by ``iters`` third-order Newton-Schulz steps."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    norm = a.abs().sum(-1).amax(-1) * a.abs().sum(-2).amax(-1)  # |A|_inf |A|_1 per matrix
    z = a.transpose(-2, -1) / norm[..., None, None]
    for _ in range(iters):  # a fixed number of matrix products, not a loop over tokens
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@MIXERS.register("soft")
class SoftmaxFreeAttention(TokenMixer):
    """SOFT: Gaussian-kernel attention with shared Q = K, approximated through pooled landmarks.

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
        landmark_size: int = 7,
        pinv_iters: int = 6,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        knobs = {"num_heads": num_heads, "landmark_size": landmark_size, "pinv_iters": pinv_iters}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"soft: {why}")
        self.num_heads, self.landmarks, self.iters = num_heads, landmark_size, pinv_iters
        self.qv = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # keys are the queries (shared projection)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        s, it = knobs.get("landmark_size", 7), knobs.get("pinv_iters", 6)
        if s < 1:
            return f"landmark_size={s} must be positive"
        if it < 1:
            return f"pinv_iters={it} must be positive"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, v = self.qv(x).chunk(2, dim=-1)  # (B, H, W, C) each
        size = (min(self.landmarks, H), min(self.landmarks, W))
        marks = F.adaptive_avg_pool2d(q.permute(0, 3, 1, 2), size)  # (B, C, s, s)
        marks = split_heads(marks.flatten(2).transpose(1, 2), self.num_heads)  # (B, heads, m, d)
        q, v = (split_heads(t.reshape(B, H * W, C), self.num_heads) for t in (q, v))  # (B, heads, N, d)
        a_qm = gaussian_kernel(q, marks)  # (B, heads, N, m)
        a_mm = iterative_pinv(gaussian_kernel(marks, marks), self.iters)  # (B, heads, m, m)
        out = a_qm @ (a_mm @ (a_qm.transpose(-2, -1) @ v))  # (B, heads, N, d), right to left
        return self.proj(merge_heads(out)).view(B, H, W, C)
