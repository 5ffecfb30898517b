"""Channel MLPs applied per token on ``(B, H, W, C)``.

Papers: Vaswani et al. 2017 (MLP); Shazeer 2020, "GLU Variants Improve Transformer" (GLU,
here SwiGLU); Wang et al. 2022, PVTv2 (ConvFFN: a depthwise 3x3 conv inside the MLP).
Built as ``Mlp(dim, hidden)``.
"""

from __future__ import annotations

import torch
from timm.layers import Mlp, SwiGLU
from torch import nn

from operators.registry import CHANNEL_MLPS


@CHANNEL_MLPS.register("mlp")
class MlpFFN(Mlp):
    """fc -> GELU -> fc (timm's Mlp)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(dim, hidden_features=hidden)


@CHANNEL_MLPS.register("glu")
class GluFFN(SwiGLU):
    """SwiGLU: ``fc2(silu(fc1_g(x)) * fc1_x(x))`` (timm's SwiGLU). ``hidden`` is the width of
    each branch scaled by 2/3, so a ratio-4 GLU has the parameters of a ratio-4 MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(dim, hidden_features=max(int(hidden * 2 / 3), 1))


@CHANNEL_MLPS.register("convffn")
class ConvFFN(nn.Module):
    """fc -> depthwise 3x3 conv -> GELU -> fc (PVTv2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)  # (B, H, W, hidden)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(self.act(x))  # (B, H, W, C)
