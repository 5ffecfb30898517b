"""LeViT attention bias: a learned per-head bias indexed by the absolute offset between tokens.

Paper: Graham et al. 2021, "LeViT: a Vision Transformer in ConvNet's Clothing for Faster
Inference". Each head keeps an ``h x w`` table; the logit bias between tokens i and j is
``table[head, |y_i - y_j|, |x_i - x_j|]``, so it is symmetric in the sign of the offset
(translation-invariant, like a relative bias with half the entries).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from operators.base import AttnPosEncoding
from operators.registry import POS_ENCODINGS


def abs_offset_index(h: int, w: int) -> torch.Tensor:
    """``(h*w, h*w)`` index ``|dy| * w + |dx|`` into a flattened ``(h, w)`` table."""
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).abs()  # (2, N, N)
    return rel[0] * w + rel[1]


def resize_levit_table(table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """``(heads, H*W)`` tables for an ``old = (H, W)`` region, bicubically resampled with the
    corners aligned to ``new = (h, w)``: ``(heads, h*w)``. Used by the forward pass and by
    checkpoint loading at another size alike."""
    (H, W), (h, w) = old, new
    if (H, W) == (h, w):
        return table
    heads = table.shape[0]
    t = F.interpolate(table.view(1, heads, H, W), size=(h, w), mode="bicubic", align_corners=True)
    return t.view(heads, h * w)


@POS_ENCODINGS.register("levit_bias")
class LevitAttnBias(AttnPosEncoding):
    """LeViT's attention bias; for another grid the ``(h, w)`` tables are bicubically resized
    with the corners aligned, so offset 0 and the largest offset keep their entries."""

    no_weight_decay_params = ("table",)

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        h, w = self.grid_size
        self.table = nn.Parameter(torch.zeros(num_heads, h * w))  # LeViT initialises it to zero
        self.register_buffer("index", abs_offset_index(h, w), persistent=False)

    def resize_state(self, name: str, tensor: torch.Tensor, source: nn.Module | None) -> torch.Tensor:
        """A checkpoint's ``table`` built for ``source``'s region, resampled to this one as ``bias``
        would (``source`` None: a square region is inferred from the table's length)."""
        if name != "table":
            return tensor
        if source is not None:
            old = source.grid_size
        else:
            side = round(tensor.shape[1] ** 0.5)
            if side * side != tensor.shape[1]:
                raise ValueError(f"levit_bias: cannot tell which region a table of {tensor.shape[1]} entries was "
                                 "built for; load it with the checkpoint's img_size known")
            old = (side, side)
        return resize_levit_table(tensor, old, self.grid_size)

    def bias(self, q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        if tuple(grid) == self.grid_size:
            table, index = self.table, self.index
        else:
            table = resize_levit_table(self.table, self.grid_size, (h, w))
            index = abs_offset_index(h, w).to(q.device)
        return table[:, index].unsqueeze(0)  # (1, heads, N, N)
