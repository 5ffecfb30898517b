"""Log-spaced continuous position bias (log-CPB) added to the attention logits.

Paper: Liu et al. 2022, "Swin Transformer V2: Scaling Up Capacity and Resolution". A small MLP
(2 -> 512 -> heads, ReLU) maps each relative offset ``(dy, dx)``, normalised by the built region
(``grid_size - 1``, times 8) and log-spaced (``sign(t) * log2(1 + |t|) / log2(8)``), to a bias
per head; the logit bias is ``16 * sigmoid(mlp(offset))``. Being a function of the offset, not a
table, it extrapolates to another window or grid at run time (normalised by the built size, as
Swin V2 normalises by the pre-training window). Works for window attention (region = window) and
global attention (region = feature map). Cost: O((2h-1)(2w-1) * 512 * heads) for the MLP plus an
``N x N`` gather per forward.

The coordinates follow ``timm.models.swin_transformer_v2.WindowAttention`` (a test compares the
Swin V2 mixer built on this encoding with timm's module).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from operators.base import AttnPosEncoding
from operators.pos_relative import relative_index
from operators.registry import POS_ENCODINGS

CPB_HIDDEN = 512  # Swin V2's MLP width


def log_spaced_offsets(h: int, w: int, norm: tuple[int, int]) -> torch.Tensor:
    """``((2h-1)(2w-1), 2)`` offsets ``(dy, dx)`` scaled to [-8, 8] by ``norm - 1`` and log-spaced."""
    dy = torch.arange(-(h - 1), h, dtype=torch.float32) / max(norm[0] - 1, 1)
    dx = torch.arange(-(w - 1), w, dtype=torch.float32) / max(norm[1] - 1, 1)
    table = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


@POS_ENCODINGS.register("log_cpb")
class LogCPB(AttnPosEncoding):
    """Swin V2's log-spaced continuous position bias, ``16 * sigmoid(MLP(log offset))`` per head."""

    no_weight_decay_params = ("cpb_mlp.0.weight", "cpb_mlp.0.bias", "cpb_mlp.2.weight")

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        h, w = self.grid_size
        self.cpb_mlp = nn.Sequential(nn.Linear(2, CPB_HIDDEN), nn.ReLU(inplace=True),
                                     nn.Linear(CPB_HIDDEN, num_heads, bias=False))
        self.register_buffer("coords", log_spaced_offsets(h, w, (h, w)), persistent=False)
        self.register_buffer("index", relative_index(h, w), persistent=False)

    def bias(self, q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        if tuple(grid) == self.grid_size:
            coords, index = self.coords, self.index
        else:  # another region at run time: same MLP, offsets normalised by the built size
            coords = log_spaced_offsets(h, w, self.grid_size).to(q.device)
            index = relative_index(h, w).to(q.device)
        table = self.cpb_mlp(coords.to(q.dtype))  # ((2h-1)(2w-1), heads)
        n = h * w
        bias = table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)  # (heads, N, N)
        return (16 * torch.sigmoid(bias)).unsqueeze(0)  # (1, heads, N, N)
