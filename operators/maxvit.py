"""Block (local window) and grid (dilated, sparse global) attention.

Paper: Tu et al. 2022, "MaxViT: Multi-Axis Vision Transformer". Block attention attends inside
non-overlapping P x P windows; grid attention attends among the G x G tokens that sit ``H/G``
apart (one from every window), giving a sparse global reach. Cost of either: O(N P^2 C)
(block, P = partition size) or O(N G^2 C) (grid) for N tokens and C channels.

timm's ``maxxvit.PartitionAttentionCl`` is a whole block (norm, attention and MLP) and asserts
that the partition divides the grid, so it does not fit a token mixer: the mixers here reuse
the window layout of ``operators.window_attention`` and their attention has the same parameters
as timm's ``maxxvit.AttentionCl`` (qkv and proj with bias) and, on grids the partition divides,
the same output (tests check both). The knobs use the shared names ``num_heads`` and
``window_size`` (the partition side P or G) so search spaces clamp them like Swin's.
Grids the partition does not divide are padded and the padded keys are masked; for grid
attention the group side is first lowered to ``ceil(H / stride)`` at the same stride
``ceil(H / G)`` (e.g. 4 instead of 7 on an 8-high map), which keeps every group's real tokens
and drops rows that would be all padding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.attention import ATTN_POS
from operators.base import TokenMixer, attend, make_attn_pos, merge_heads
from operators.registry import MIXERS
from operators.window_attention import NEG_INF, window_partition, window_reverse

Partition = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]


def grid_partition(x: torch.Tensor, gs: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W, C) -> (B * nW, gh * gw, C)``: each group holds the tokens ``H/gh`` apart."""
    B, H, W, C = x.shape
    x = x.view(B, gs[0], H // gs[0], gs[1], W // gs[1], C)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(-1, gs[0] * gs[1], C)


def grid_reverse(groups: torch.Tensor, gs: tuple[int, int], H: int, W: int) -> torch.Tensor:
    """``(B * nW, gh * gw, C) -> (B, H, W, C)``, the inverse of :func:`grid_partition`."""
    C = groups.shape[-1]
    x = groups.view(-1, H // gs[0], W // gs[1], gs[0], gs[1], C)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(-1, H, W, C)


def padding_mask(partition: Partition, Hp: int, Wp: int, ps: tuple[int, int], valid: tuple[int, int],
                 device: torch.device) -> torch.Tensor | None:
    """Additive mask ``(nW, 1, 1, n)`` hiding padded keys in each partition; None without padding."""
    if valid == (Hp, Wp):
        return None
    pad = torch.ones(1, Hp, Wp, 1, device=device)
    pad[:, : valid[0], : valid[1]] = 0
    pad = partition(pad, ps).squeeze(-1)  # (nW, n)
    return (pad * NEG_INF)[:, None, None, :]


class PartitionAttention(TokenMixer):
    """Shared body: multi-head attention inside a window ("block") or grid partition of the map."""

    supported_pos = ATTN_POS

    def __init__(self, dim: int, *, grid_size: tuple[int, int], pos_encoding: str, num_heads: int,
                 partition_size: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.partition = (partition_size, partition_size)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.pos = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=self.partition)
        self._masks: dict[tuple, torch.Tensor | None] = {}

    def _mask(self, part: Partition, Hp: int, Wp: int, ps: tuple[int, int], valid: tuple[int, int],
              device: torch.device) -> torch.Tensor | None:
        """The padding mask for this geometry, built once and reused (rebuilt while tracing)."""
        if torch.compiler.is_compiling():
            return padding_mask(part, Hp, Wp, ps, valid, device)
        key = (part.__name__, Hp, Wp, ps, valid, str(device))
        if key not in self._masks:
            self._masks[key] = padding_mask(part, Hp, Wp, ps, valid, device)
        return self._masks[key]

    def attend_partitioned(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """Attention inside ``mode`` ("block" or "grid") partitions of ``x (B, H, W, C)``."""
        B, H, W, C = x.shape
        ps = (min(self.partition[0], H), min(self.partition[1], W))
        if mode == "grid":  # same stride ceil(H / G), fewest rows: ceil(H / stride) <= G, so less padding
            ps = (-(-H // -(-H // ps[0])), -(-W // -(-W // ps[1])))
        pad_h, pad_w = (-H) % ps[0], (-W) % ps[1]
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
        Hp, Wp = H + pad_h, W + pad_w
        part, rev = (window_partition, window_reverse) if mode == "block" else (grid_partition, grid_reverse)
        groups = part(x, ps)  # (B*nW, n, C)
        nWB, n, _ = groups.shape
        qkv = self.qkv(groups).view(nWB, n, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B*nW, heads, n, d)
        mask = self._mask(part, Hp, Wp, ps, (H, W), x.device)
        if mask is not None:  # (nW, 1, 1, n) -> (B*nW, 1, 1, n)
            mask = mask.repeat(B, 1, 1, 1)
        out = attend(q, k, v, self.pos, ps, mask)  # (B*nW, heads, n, d)
        x = rev(self.proj(merge_heads(out)), ps, Hp, Wp)  # (B, Hp, Wp, C)
        return x[:, :H, :W, :].contiguous()

    @staticmethod
    def check_partition(name: str, size: int, grid_size: tuple[int, int]) -> str | None:
        """A partition side must be between 1 and the smaller side of the feature map."""
        if not 1 <= size <= min(grid_size):
            return (f"{name}={size} must be between 1 and the smaller side of the "
                    f"{grid_size[0]}x{grid_size[1]} feature map ({min(grid_size)})")
        return None


class _MaxVitAttention(PartitionAttention):
    """``window_size`` is the partition side: P for block attention, G for grid attention
    (MaxViT uses 7 for both and 32 channels per head, i.e. ``num_heads = dim // 32``)."""

    mode = "block"

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        window_size: int = 7,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(dim, grid_size=grid_size, pos_encoding=pos_encoding, num_heads=num_heads,
                         partition_size=window_size, qkv_bias=qkv_bias)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        why = cls.check_partition("window_size", knobs.get("window_size", 7), grid_size)
        return why or super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend_partitioned(x, self.mode)  # (B, H, W, C)


@MIXERS.register("maxvit_block")
class MaxVitBlockAttention(_MaxVitAttention):
    """MaxViT block attention: windows of ``window_size`` squared neighbouring tokens."""

    mode = "block"


@MIXERS.register("maxvit_grid")
class MaxVitGridAttention(_MaxVitAttention):
    """MaxViT grid attention: groups of ``window_size`` squared tokens spread evenly over the map."""

    mode = "grid"
