"""Patchwise self-attention (SAN).

Paper: Zhao, Jia & Koltun 2020, "Exploring Self-attention for Image Recognition" (SAN). For each
location i and its ``k x k`` footprint R(i), a weight vector per footprint position is computed
from the whole patch: ``alpha(x_R(i)) = gamma([phi(x_i), psi(x_j) for j in R(i)])``, where phi and
psi are 1x1 projections to ``dim / rel_ratio`` channels and gamma is BN-ReLU-1x1-BN-ReLU-1x1; the
output is ``y_i = sum_j alpha_j * beta(x_j)`` (Hadamard, each weight shared by ``share_planes``
channels: channel c uses weight ``c mod (dim / share_planes)``, as the official Aggregation op).
Footprints reach past the border through reflection padding, as the official code. As in the paper,
patchwise weights are not softmax-normalised. Cost: O(N (C^2 (1 + 2 / r) + (C / r) (k^2 + 1) C / s
+ k^2 C^2 / s^2 + k^2 C)) MACs for N tokens, C channels, footprint k, reduction r and sharing s;
memory O(N C k^2) for the gathered footprints (about 15x global attention's at k = 7, C = 64 on
28x28: ``benchmarks/mixers.py``).

Gathered with ``F.unfold`` (no loop over positions); 1x1 convs over the flattened map as
``Conv1d``. timm has no SAN.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


def reflect_unfold(t: torch.Tensor, kernel: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, k*k, H*W)``: each position's ``k x k`` footprint, reflection-padded."""
    B, C, H, W = t.shape
    p = F.unfold(F.pad(t, (kernel // 2,) * 4, mode="reflect"), kernel)  # (B, C*k*k, H*W)
    return p.view(B, C, kernel * kernel, H * W)


@MIXERS.register("san_patch")
class PatchwiseSelfAttention(TokenMixer):
    """SAN's patchwise self-attention: footprint weights computed from the whole patch, shared over channel groups."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        kernel_size: int = 7,
        rel_ratio: int = 16,
        share_planes: int = 8,
    ) -> None:
        super().__init__()
        knobs = {"kernel_size": kernel_size, "rel_ratio": rel_ratio, "share_planes": share_planes}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"san_patch: {why}")
        self.kernel_size, self.share = kernel_size, share_planes
        rel, wc, kk = max(dim // rel_ratio, 1), dim // share_planes, kernel_size * kernel_size
        self.conv1 = nn.Linear(dim, rel)  # phi (query)
        self.conv2 = nn.Linear(dim, rel)  # psi (key)
        self.conv3 = nn.Linear(dim, dim)  # beta (value)
        self.conv_w = nn.Sequential(  # gamma
            nn.BatchNorm1d(rel * (kk + 1)), nn.ReLU(inplace=True),
            nn.Conv1d(rel * (kk + 1), wc, 1, bias=False),
            nn.BatchNorm1d(wc), nn.ReLU(inplace=True),
            nn.Conv1d(wc, kk * wc, 1),
        )

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k, r, s = knobs.get("kernel_size", 7), knobs.get("rel_ratio", 16), knobs.get("share_planes", 8)
        if k < 1 or k % 2 == 0:
            return f"kernel_size={k} must be a positive odd number"
        if k // 2 >= min(grid_size):
            return (f"kernel_size={k} reaches past the reflection padding of the {grid_size[0]}x{grid_size[1]} "
                    f"feature map; use at most {2 * min(grid_size) - 1}")
        if r < 1:
            return f"rel_ratio={r} must be positive"
        if s < 1 or dim % s:
            return f"share_planes={s} must be positive and divide the width {dim}"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        k, N = self.kernel_size, H * W
        q = self.conv1(x).view(B, N, -1).transpose(1, 2)  # (B, r, N)
        key = reflect_unfold(self.conv2(x).permute(0, 3, 1, 2), k)  # (B, r, k*k, N)
        w = self.conv_w(torch.cat([q, key.reshape(B, -1, N)], dim=1))  # (B, wc*k*k, N)
        w = w.view(B, 1, C // self.share, k * k, N)  # (B, 1, wc, k*k, N)
        v = reflect_unfold(self.conv3(x).permute(0, 3, 1, 2), k)  # (B, C, k*k, N)
        out = (v.view(B, self.share, C // self.share, k * k, N) * w).sum(3)  # (B, s, wc, N)
        return out.reshape(B, C, H, W).permute(0, 2, 3, 1)  # (B, H, W, C)
