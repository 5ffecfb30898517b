"""Tokens-to-token (T2T) stem: overlapping soft splits with token transformers in between.

Paper: Yuan et al. 2021, "Tokens-to-Token ViT: Training Vision Transformers from Scratch on
ImageNet". The image is cut into overlapping 7x7 patches of stride 4 (``nn.Unfold``, a "soft
split"); each later step re-structures the tokens into a grid and soft-splits 3x3 neighbourhoods
of stride 2, so neighbouring tokens are aggregated. Between splits a light token transformer
(a linear reduction to ``token_dim`` then one pre-norm attention block with MLP ratio 1, as in
T2T-ViT_t; ``token_mixer="performer"`` gives T2T-ViT's Performer variant when registered) models
the tokens. A final linear layer projects to the stage width.

Total stride ``patch_size = 4 * 2^n`` with ``n`` stride-2 splits: 4, 8, 16 (the paper's) or 32.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from operators.base import cover_pad, pad_to_cover
from operators.block import UnifiedBlock
from operators.registry import MIXERS, STEMS
from operators.stems import Stem

ALLOWED_PATCHES = (4, 8, 16, 32)
TOKEN_MIXERS = ("attention", "performer")  # global mixers that work on any grid, as in the paper


class SoftSplit(nn.Module):
    """``nn.Unfold`` over a channels-last grid: ``(B, H, W, C) -> (B, h, w, C * k * k)``.

    A side the stride leaves pixels of is zero-padded at the end first, so every pixel is in
    some split (the 7/4/2 split misses the last pixel of a side of 34, for instance).
    """

    def __init__(self, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.k, self.s, self.p = kernel_size, stride, padding
        self.unfold = nn.Unfold(kernel_size, stride=stride, padding=padding)

    def out_size(self, n: int) -> int:
        return (n + cover_pad(n, self.k, self.s, self.p) + 2 * self.p - self.k) // self.s + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = pad_to_cover(x, self.k, self.s, self.p, channels_last=True)  # (B, H', W', C)
        cols = self.unfold(x.permute(0, 3, 1, 2))  # (B, C*k*k, h*w)
        return cols.transpose(1, 2).reshape(B, self.out_size(H), self.out_size(W), -1)  # (B, h, w, C*k*k)


class TokenTransformer(nn.Module):
    """LayerNorm + linear reduction ``in_dim -> token_dim``, then one unified block (MLP ratio 1)."""

    def __init__(self, in_dim: int, token_dim: int, token_mixer: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.reduce = nn.Linear(in_dim, token_dim)
        mixer_cls = MIXERS.get(token_mixer)
        knobs = {"num_heads": 1} if "num_heads" in mixer_cls.knobs() else {}
        self.block = UnifiedBlock(token_dim, token_mixer=mixer_cls, mixer_knobs=knobs, grid_size=(56, 56), mlp_ratio=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.reduce(self.norm(x)))  # (B, h, w, token_dim)


@STEMS.register("t2t")
class T2TStem(Stem):
    """T2T-ViT's tokens-to-token module: soft split (7, s4) -> [token transformer -> soft split
    (3, s2)] x log2(patch_size / 4) -> linear projection to ``dim``."""

    first_conv = "stem.transformers.0.reduce"  # the first weight that sees pixels (patch_size >= 8)

    def __init__(self, in_chans: int, dim: int, *, patch_size: int = 16, token_dim: int = 64,
                 token_mixer: str = "attention") -> None:
        super().__init__()
        if (why := self.check(patch_size, {"token_dim": token_dim, "token_mixer": token_mixer})) is not None:
            raise ValueError(f"t2t stem: {why}")
        n = int(math.log2(patch_size // 4))
        self.splits = nn.ModuleList([SoftSplit(7, 4, 2)] + [SoftSplit(3, 2, 1) for _ in range(n)])
        widths = [in_chans * 49] + [token_dim * 9] * n
        self.transformers = nn.ModuleList(TokenTransformer(w, token_dim, token_mixer) for w in widths[:n])
        self.project = nn.Linear(widths[-1], dim)

    @classmethod
    def check(cls, patch_size: int, knobs: dict[str, Any]) -> str | None:
        if patch_size not in ALLOWED_PATCHES:
            return (f"the t2t stem needs patch_size in {ALLOWED_PATCHES} (one stride-4 soft split, then "
                    f"stride-2 splits), got {patch_size}")
        mixer = knobs.get("token_mixer", "attention")
        if mixer not in TOKEN_MIXERS or mixer not in MIXERS:
            avail = [m for m in TOKEN_MIXERS if m in MIXERS]
            return f"t2t token_mixer={mixer!r} is not available; use one of {avail}"
        if knobs.get("token_dim", 64) < 1:
            return f"t2t token_dim must be positive, got {knobs['token_dim']}"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.splits[0](x.permute(0, 2, 3, 1))  # (B, H/4, W/4, C_in*49)
        for tt, split in zip(self.transformers, self.splits[1:], strict=True):
            x = split(tt(x))  # (B, h/2, w/2, token_dim*9)
        return self.project(x)  # (B, H/p, W/p, dim)
