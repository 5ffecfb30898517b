"""Shifted-window multi-head self-attention.

Paper: Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows". Cost: O(N w^2 C) for window size w. Grids the window does not divide are padded
(the padded keys are masked out); odd blocks of a stage shift the windows by w // 2.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from operators.attention import ATTN_POS
from operators.base import TokenMixer, attend, make_attn_pos, merge_heads
from operators.registry import MIXERS

NEG_INF = -1e4  # large enough to zero a softmax weight, small enough for bf16


def window_partition(x: torch.Tensor, ws: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W, C) -> (B * nW, wh * ww, C)``; H and W must be multiples of the window."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws[0], ws[0], W // ws[1], ws[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws[0] * ws[1], C)


def window_reverse(windows: torch.Tensor, ws: tuple[int, int], H: int, W: int) -> torch.Tensor:
    """``(B * nW, wh * ww, C) -> (B, H, W, C)``."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws[0], W // ws[1], ws[0], ws[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def window_mask(H: int, W: int, ws: tuple[int, int], shift: tuple[int, int],
                valid: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    """Additive mask ``(nW, 1, n, n)`` that keeps tokens from attending across shifted-region
    boundaries or to padding. ``valid`` is the unpadded size; None when nothing is masked."""
    if shift == (0, 0) and valid == (H, W):
        return None
    region = torch.zeros(1, H, W, 1, device=device)
    label = 0
    for hs in _shift_slices(H, ws[0], shift[0]):
        for wsl in _shift_slices(W, ws[1], shift[1]):
            region[:, hs, wsl, :] = label
            label += 1
    pad = torch.ones(1, H, W, 1, device=device, dtype=torch.bool)
    pad[:, : valid[0], : valid[1], :] = False
    if shift != (0, 0):  # padding sits at the end before the roll
        pad = torch.roll(pad, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    region = window_partition(region, ws).squeeze(-1)  # (nW, n)
    padw = window_partition(pad.float(), ws).squeeze(-1).bool()  # (nW, n)
    blocked = (region[:, :, None] != region[:, None, :]) | padw[:, None, :]
    mask = torch.zeros(blocked.shape, device=device).masked_fill(blocked, NEG_INF)
    return mask[:, None]  # (nW, 1, n, n)


def _shift_slices(size: int, win: int, shift: int) -> list[slice]:
    if shift == 0:
        return [slice(0, size)]
    return [slice(0, -win), slice(-win, -shift), slice(-shift, None)]


@MIXERS.register("window")
class WindowAttention(TokenMixer):
    """Attention inside non-overlapping windows, shifted every other block (Swin)."""

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
        shift: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = (window_size, window_size)
        self.shifted = shift and block_index % 2 == 1
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos = make_attn_pos(pos_encoding, dim=dim, num_heads=num_heads, grid_size=self.window)
        self._masks: dict[tuple, torch.Tensor | None] = {}

    @classmethod
    def canonical_knobs(cls, knobs: dict[str, Any], *, depth: int) -> dict[str, Any]:
        """Only odd blocks shift, so ``shift`` cannot matter in a one-block stage."""
        if depth == 1 and "shift" in knobs and "shift" in cls.knobs():
            knobs = {**knobs, "shift": cls.knobs()["shift"].default}
        return knobs

    def _mask(self, Hp: int, Wp: int, ws: tuple[int, int], shift: tuple[int, int], valid: tuple[int, int],
              device: torch.device) -> torch.Tensor | None:
        """The window mask for this geometry, built once and reused."""
        if torch.compiler.is_compiling():  # traced graphs build it as constants instead
            return window_mask(Hp, Wp, ws, shift, valid, device)
        key = (Hp, Wp, ws, shift, valid, str(device))
        if key not in self._masks:
            self._masks[key] = window_mask(Hp, Wp, ws, shift, valid, device)
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        ws = (min(self.window[0], H), min(self.window[1], W))
        pad_h, pad_w = (-H) % ws[0], (-W) % ws[1]
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
        Hp, Wp = H + pad_h, W + pad_w
        shift = (ws[0] // 2, ws[1] // 2) if self.shifted and (H > ws[0] or W > ws[1]) else (0, 0)
        if shift != (0, 0):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(x, ws)  # (B*nW, n, C)
        nWB, n, _ = windows.shape
        qkv = self.qkv(windows).view(nWB, n, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B*nW, heads, n, d)
        mask = self._mask(Hp, Wp, ws, shift, (H, W), x.device)
        if mask is not None:  # (nW, 1, n, n) -> (B*nW, 1, n, n)
            mask = mask.repeat(B, 1, 1, 1)
        out = attend(q, k, v, self.pos, ws, mask)
        out = self.proj(merge_heads(out))  # (B*nW, n, C)
        x = window_reverse(out, ws, Hp, Wp)  # (B, Hp, Wp, C)
        if shift != (0, 0):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :H, :W, :].contiguous()
