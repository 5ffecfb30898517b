"""Local relation layer: aggregation weights from appearance composability plus a geometric prior.

Paper: Hu, Zhang, Xie & Lin 2019, "Local Relation Networks for Image Recognition" (LR-Net). In a
``k x k`` neighbourhood of each location p', the weight of p is
``softmax_p(-(q_p' - k_p)^2 + g(p - p'))``, computed for each of ``groups`` channel groups (one
scalar query and key per group, the paper's squared-difference composability and channel sharing),
where g is a small MLP (2 -> 32 -> groups, ReLU) of the relative position, the geometric prior.
The channels of group m are aggregated with that group's weights. Projections before (values)
and after, as the 1x1 convolutions around the LR layer in LR-Net's bottleneck. Neighbours outside
the map are excluded from the softmax. Cost: O(N (2 C^2 + 2 C m + k^2 (C + m))) MACs for N tokens,
C channels, k x k neighbourhood and m groups; memory O(N C k^2) for the gathered neighbourhoods.

Gathered with ``F.unfold`` (no loop over positions). timm has no local relation layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS
from operators.window_attention import NEG_INF

GEOMETRY_HIDDEN = 32  # width of the geometric-prior MLP


def neighbourhood(t: torch.Tensor, kernel: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, k*k, H*W)``: each position's ``k x k`` neighbours, zero outside the map."""
    B, C, H, W = t.shape
    return F.unfold(t, kernel, padding=kernel // 2).view(B, C, kernel * kernel, H * W)


@MIXERS.register("local_relation")
class LocalRelation(TokenMixer):
    """LR-Net's local relation layer: softmax over a k x k neighbourhood of key-query composability + geometry."""

    supported_pos = frozenset()

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        kernel_size: int = 7,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"kernel_size": kernel_size, "groups": groups})):
            raise ValueError(f"local_relation: {why}")
        self.kernel_size, self.groups = kernel_size, groups
        self.qk = nn.Linear(dim, 2 * groups)  # one scalar query and key per channel group
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.geometry = nn.Sequential(nn.Linear(2, GEOMETRY_HIDDEN), nn.ReLU(), nn.Linear(GEOMETRY_HIDDEN, groups))
        r = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
        dy, dx = torch.meshgrid(r, r, indexing="ij")
        self.register_buffer("offsets", torch.stack([dx.flatten(), dy.flatten()], -1), persistent=False)  # (k*k, 2)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k, m = knobs.get("kernel_size", 7), knobs.get("groups", 8)
        if k < 1 or k % 2 == 0:
            return f"kernel_size={k} must be a positive odd number"
        if m < 1 or dim % m:
            return f"groups={m} must be positive and divide the width {dim}"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        k, m, N = self.kernel_size, self.groups, H * W
        q, key = self.qk(x).permute(0, 3, 1, 2).split(m, dim=1)  # (B, m, H, W) each
        inside = neighbourhood(torch.ones(1, 1, H, W, device=x.device, dtype=x.dtype), k) > 0.5  # (1, 1, k*k, N)
        logits = -(q.reshape(B, m, 1, N) - neighbourhood(key, k)).square()  # (B, m, k*k, N)
        logits = logits + self.geometry(self.offsets.to(x.dtype)).T[None, :, :, None]  # + (1, m, k*k, 1)
        attn = logits.masked_fill(~inside, NEG_INF).softmax(dim=2)  # (B, m, k*k, N)
        v = neighbourhood(self.value(x).permute(0, 3, 1, 2), k)  # (B, C, k*k, N)
        out = (v.view(B, m, C // m, k * k, N) * attn[:, :, None]).sum(3)  # (B, m, C/m, N)
        return self.proj(out.reshape(B, C, N).transpose(1, 2)).view(B, H, W, C)
