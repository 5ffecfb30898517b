"""Axial attention: attention along the rows, then along the columns.

Papers: Ho et al. 2019, "Axial Attention in Multidimensional Transformers" (Axial
Transformers) and Wang et al. 2020, "Axial-DeepLab: Stand-Alone Axial-Attention for Panoptic
Segmentation". Two attention layers, each with its own q/k/v projection: the first attends
along each row (W tokens), the second along each column (H tokens) of the first's output; one
output projection follows. Every row (column) is a batch entry of one SDPA call, so there is
no loop over rows. Cost O(N (H + W) C) for N = H W tokens and C channels.
"""

from __future__ import annotations

import torch
from torch import nn

from operators.base import TokenMixer, attend, make_attn_pos
from operators.registry import MIXERS


@MIXERS.register("axial")
class AxialAttention(TokenMixer):
    """Row attention followed by column attention (Axial Transformers / Axial-DeepLab)."""

    # relative bias over the 1-D offsets of an axis (Axial-DeepLab uses relative positions);
    # LePE convolves the values of the attended row/column
    supported_pos = frozenset({"rel_bias", "lepe"})

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
        self.num_heads = num_heads
        H, W = grid_size
        self.qkv_row = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.qkv_col = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # columns run as rows of the transposed grid, so both encodings see a (1, L) region
        self.pos_row = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=(1, W))
        self.pos_col = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=(1, H))

    def _axis(self, x: torch.Tensor, qkv: nn.Linear, pos: nn.Module | None) -> torch.Tensor:
        """Attention along the last spatial axis: ``(B, A, L, C) -> (B, A, L, C)``."""
        B, A, L, C = x.shape
        q, k, v = qkv(x).view(B * A, L, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = attend(q, k, v, pos, (1, L))  # (B*A, heads, L, d)
        return out.transpose(1, 2).reshape(B, A, L, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._axis(x, self.qkv_row, self.pos_row)  # (B, H, W, C): along rows
        x = self._axis(x.transpose(1, 2), self.qkv_col, self.pos_col).transpose(1, 2)  # along columns
        return self.proj(x)  # (B, H, W, C)
