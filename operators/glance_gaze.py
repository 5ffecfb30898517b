"""Glance-and-gaze attention (GG-Transformer).

Paper: Yu et al. 2021, "Glance-and-Gaze Vision Transformer". *Glance*: self-attention inside
adaptively-dilated partitions — G x G groups of tokens that sit ``H / G`` apart, so each group
spans the whole map (MaxViT's grid partition, reused from ``operators/maxvit.py``, with its
padding and masking for grids G does not divide). *Gaze*: a depthwise k x k convolution of the
values on the original (undilated) grid restores the local context the dilated partition
skips; it is added to the attention output before the projection. Cost O(N G^2 C + N k^2 C +
4 N C^2). Not in timm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.attention import ATTN_POS
from operators.base import attend, merge_heads
from operators.maxvit import PartitionAttention, grid_partition, grid_reverse
from operators.registry import MIXERS


@MIXERS.register("glance_gaze")
class GlanceGazeAttention(PartitionAttention):
    """GG-Transformer: dilated-partition attention (glance) plus a depthwise conv of V (gaze).

    ``(B, H, W, C) -> (B, H, W, C)``. Raises ``ValueError`` (one line) when ``check`` rejects the knobs.
    """

    supported_pos = ATTN_POS

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        window_size: int = 7,
        gaze_kernel: int = 3,
        qkv_bias: bool = True,
    ) -> None:
        knobs = {"num_heads": num_heads, "window_size": window_size, "gaze_kernel": gaze_kernel}
        if (why := self.check(dim, tuple(grid_size), knobs)):
            raise ValueError(f"glance_gaze: {why}")
        super().__init__(dim, grid_size=grid_size, pos_encoding=pos_encoding, num_heads=num_heads,
                         partition_size=window_size, qkv_bias=qkv_bias)
        self.gaze = nn.Conv2d(dim, dim, gaze_kernel, padding=gaze_kernel // 2, groups=dim)

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k = knobs.get("gaze_kernel", 3)
        if k < 1 or k % 2 == 0:
            return f"gaze_kernel={k} must be a positive odd number"
        why = cls.check_partition("window_size", knobs.get("window_size", 7), grid_size)
        return why or super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x)  # (B, H, W, 3C)
        gaze = self.gaze(qkv[..., 2 * C:].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
        ps = (min(self.partition[0], H), min(self.partition[1], W))
        ps = (-(-H // -(-H // ps[0])), -(-W // -(-W // ps[1])))  # fewest rows at stride ceil(H / G)
        pad_h, pad_w = (-H) % ps[0], (-W) % ps[1]
        groups = grid_partition(F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h)), ps)  # (B*nW, n, 3C)
        nWB, n, _ = groups.shape
        q, k, v = groups.view(nWB, n, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = self._mask(grid_partition, H + pad_h, W + pad_w, ps, (H, W), x.device)  # (nW, 1, 1, n)
        if mask is not None:
            mask = mask.repeat(B, 1, 1, 1)
        out = attend(q, k, v, self.pos, ps, mask)  # (B*nW, heads, n, d)
        glance = grid_reverse(merge_heads(out), ps, H + pad_h, W + pad_w)[:, :H, :W]  # (B, H, W, C)
        return self.proj(glance + gaze)  # (B, H, W, C)
