"""Stems: image ``(B, C_in, H, W)`` -> token grid ``(B, H/p, W/p, C)``.

Papers: Dosovitskiy et al. 2021 (ViT patchify); Wang et al. 2022 (PVTv2 overlapping patch
embedding); Xiao et al. 2021, "Early Convolutions Help Transformers See Better" (conv stem).
Every stem is built as ``Stem(in_chans, dim, *, patch_size, <knobs>)``; ``patch_size`` is its
total stride.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from operators.base import operator_knobs, pad_to_cover
from operators.registry import STEMS


class Stem(nn.Module):
    """Base: subclasses set ``first_conv`` (the name timm's pretrained_cfg needs)."""

    first_conv: ClassVar[str] = "stem.proj"
    registry_name: ClassVar[str] = ""

    @classmethod
    def knobs(cls):
        return operator_knobs(cls, skip=("patch_size",))

    @classmethod
    def check(cls, patch_size: int, knobs: dict[str, Any]) -> str | None:
        return None if patch_size >= 1 else f"patch_size must be positive, got {patch_size}"


@STEMS.register("patchify")
class PatchifyStem(Stem):
    """Non-overlapping ``p x p`` patches linearly embedded (ViT); optional LayerNorm (Swin).

    A side that ``p`` does not divide is zero-padded at the bottom/right to the next multiple
    (timm's ``dynamic_img_pad``), so the last pixels reach a patch: ``(B, ceil(H/p), ceil(W/p), C)``.
    """

    def __init__(self, in_chans: int, dim: int, *, patch_size: int = 16, norm: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_cover(x, self.patch_size, self.patch_size)  # (B, C_in, p*ceil(H/p), p*ceil(W/p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H/p, W/p, C)


@STEMS.register("overlap")
class OverlapStem(Stem):
    """Overlapping patches: a ``k x k`` conv of stride ``p`` (PVTv2; MetaFormer uses k=7, p=4).

    ``k`` is odd and at least ``2p - 1``, so with its ``k // 2`` padding the windows reach every
    pixel of any input and the grid is ``ceil(H/p) x ceil(W/p)``.
    """

    def __init__(self, in_chans: int, dim: int, *, patch_size: int = 4, kernel_size: int = 7,
                 norm: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size, stride=patch_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()

    @classmethod
    def check(cls, patch_size: int, knobs: dict[str, Any]) -> str | None:
        k = knobs.get("kernel_size", 7)
        if k % 2 == 0 or k < 2 * patch_size - 1:
            return (f"kernel_size={k} must be odd and at least 2 * patch_size - 1 = {2 * patch_size - 1} "
                    "(otherwise the last pixels of a side never reach a patch)")
        return super().check(patch_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H/p, W/p, C)


@STEMS.register("conv")
class ConvStem(Stem):
    """Stacked 3x3 stride-2 conv-BN-ReLU layers, then a 1x1 projection (Xiao et al. 2021).

    ``log2(patch_size)`` layers; channels double each layer up to ``dim / 2`` at the last.
    """

    first_conv = "stem.convs.0.0"

    def __init__(self, in_chans: int, dim: int, *, patch_size: int = 16) -> None:
        super().__init__()
        n = int(math.log2(patch_size))
        widths = [max(dim // 2 ** (n - i), 8) for i in range(n)]  # e.g. 24, 48, 96, 192 -> dim
        layers, c = [], in_chans
        for w in widths:
            layers.append(nn.Sequential(nn.Conv2d(c, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)))
            c = w
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c, dim, 1)

    @classmethod
    def check(cls, patch_size: int, knobs: dict[str, Any]) -> str | None:
        if patch_size < 2 or patch_size & (patch_size - 1):
            return f"the conv stem needs a power-of-two patch_size >= 2, got {patch_size}"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x)).permute(0, 2, 3, 1)  # (B, H/p, W/p, C)
