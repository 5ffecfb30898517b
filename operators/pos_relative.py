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


def resize_rel_table(table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """A ``((2H-1)(2W-1), heads)`` table for an ``old = (H, W)`` region, bicubically resampled
    (corners not aligned) to ``new = (h, w)``: ``((2h-1)(2w-1), heads)``. The forward pass and
    checkpoint loading at another size both use it."""
    (H, W), (h, w) = old, new
    if (H, W) == (h, w):
        return table
    heads = table.shape[1]
    t = table.T.reshape(1, heads, 2 * H - 1, 2 * W - 1)
    t = F.interpolate(t, size=(2 * h - 1, 2 * w - 1), mode="bicubic", align_corners=False)
    return t.reshape(heads, -1).T


def _square_region(length: int, what: str) -> tuple[int, int]:
    """The square ``(n, n)`` region a ``(2n-1)^2``-entry table was built for."""
    side = round(length ** 0.5)
    if side * side != length or side % 2 == 0:
        raise ValueError(f"{what}: cannot tell which region a table of {length} entries was built for; "
                         "load it with the checkpoint's img_size known (its pretrained_cfg input_size)")
    return (side + 1) // 2, (side + 1) // 2


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

    def resize_state(self, name: str, tensor: torch.Tensor, source: nn.Module | None) -> torch.Tensor:
        """A checkpoint's ``table`` built for ``source``'s region, resampled to this one as ``bias``
        would (``source`` None: a square region is inferred from the table's length)."""
        if name != "table":
            return tensor
        old = source.grid_size if source is not None else _square_region(tensor.shape[0], "rel_bias")
        return resize_rel_table(tensor, old, self.grid_size)

    def bias(self, q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        if tuple(grid) == self.grid_size:
            table, index = self.table, self.index
        else:
            table = resize_rel_table(self.table, self.grid_size, (h, w))
            index = relative_index(h, w).to(q.device)
        n = h * w
        return table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
