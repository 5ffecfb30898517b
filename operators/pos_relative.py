"""Learned relative position bias added to the attention logits.

Paper: Liu et al. 2021, "Swin Transformer" (after Shaw et al. 2018 and Raffel et al. 2020).
One table of ``(2h-1)(2w-1)`` entries per head, indexed by the offset between two tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from operators.base import AttnPosEncoding
from operators.registry import POS_ENCODINGS


def relative_index(h: int, w: int) -> torch.Tensor:
    """``(h*w, h*w)`` index into a ``(2h-1)(2w-1)`` table of offsets."""
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + h - 1) * (2 * w - 1) + (rel[1] + w - 1)


@POS_ENCODINGS.register("rel_bias")
class RelPosBias(AttnPosEncoding):
    """Swin's relative position bias; for another grid the table is bicubically resized."""

    no_weight_decay_params = ("table",)

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        h, w = self.grid_size
        self.table = nn.Parameter(torch.zeros((2 * h - 1) * (2 * w - 1), num_heads))
        trunc_normal_(self.table, std=0.02)
        self.register_buffer("index", relative_index(h, w), persistent=False)

    def bias(self, q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        if tuple(grid) == self.grid_size:
            table, index = self.table, self.index
        else:
            H, W = self.grid_size
            table = self.table.T.reshape(1, self.num_heads, 2 * H - 1, 2 * W - 1)
            table = F.interpolate(table, size=(2 * h - 1, 2 * w - 1), mode="bicubic", align_corners=False)
            table = table.reshape(self.num_heads, -1).T
            index = relative_index(h, w).to(q.device)
        n = h * w
        return table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
