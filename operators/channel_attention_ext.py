"""More channel attention for the block's ``channel_attn`` knob: SK, FcaNet, eSE, triplet, split
attention and global context.

Papers: Li et al. 2019, "Selective Kernel Networks" (SKNet); Qin et al. 2021, "FcaNet: Frequency
Channel Attention Networks"; Lee & Park 2020, "CenterMask: Real-Time Anchor-Free Instance
Segmentation" (effective SE); Misra et al. 2021, "Rotate to Attend: Convolutional Triplet
Attention Module"; Zhang et al. 2022, "ResNeSt: Split-Attention Networks"; Cao et al. 2019,
"GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond".

Each is built as ``Cls(dim)`` and maps a channels-last grid ``(B, H, W, C)`` to the same shape.
SK, eSE, split attention and global context are timm's NCHW modules
(``timm.layers.SelectiveKernel``, ``EffectiveSEModule``, ``SplitAttn``, ``GlobalContext``) run
on a permuted view; FcaNet and triplet attention are not in timm and are written here.
SK and split attention are convolution-plus-attention units (they replace ``x`` by a
softmax-weighted mix of conv branches); the others gate ``x``.
"""

from __future__ import annotations

import math

import torch
from timm.layers import EffectiveSEModule, GlobalContext, SelectiveKernel, SplitAttn
from torch import nn

from operators.channel_attention import _NchwChannelAttn
from operators.registry import CHANNEL_ATTNS


@CHANNEL_ATTNS.register("sk")
class SelectiveKernelAttn(_NchwChannelAttn):
    """SKNet: a 3x3 and a dilated 3x3 (5x5 field) branch on halves of the input channels, fused
    by a softmax over branches per channel from the pooled sum (timm's ``SelectiveKernel``,
    reduction C/16, BatchNorm in the squeeze path: training needs more than one sample)."""

    def __init__(self, dim: int, rd_ratio: float = 1 / 16) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sk: the width {dim} must be even (the input is split over two branches)")
        self.attn = SelectiveKernel(dim, dim, rd_ratio=rd_ratio)


@CHANNEL_ATTNS.register("ese")
class EffectiveSqueezeExcite(_NchwChannelAttn):
    """eSE (CenterMask): global average pool -> one FC (C -> C, no reduction) -> hard sigmoid gate
    (timm's ``EffectiveSEModule``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = EffectiveSEModule(dim)


@CHANNEL_ATTNS.register("splat")
class SplitAttention(_NchwChannelAttn):
    """ResNeSt split attention: a grouped 3x3 conv makes ``radix`` splits, a softmax over the
    splits per channel (from the pooled sum through a C/4 bottleneck, at least 32 wide) mixes
    them (timm's ``SplitAttn``, radix 2)."""

    def __init__(self, dim: int, radix: int = 2) -> None:
        super().__init__()
        if radix < 1 or dim % radix:
            raise ValueError(f"splat: radix={radix} must be positive and divide the width {dim}")
        self.attn = SplitAttn(dim, dim, radix=radix)


@CHANNEL_ATTNS.register("gc")
class GlobalContextAttn(_NchwChannelAttn):
    """GCNet: softmax attention pooling over all positions (a 1x1 conv gives the logits) ->
    bottleneck transform (C/16, LayerNorm, ReLU) -> added to every position (timm's
    ``GlobalContext`` with the paper's add fusion; the last layer's weight and bias start at
    zero, as GCNet's, so the module starts as the identity)."""

    def __init__(self, dim: int, rd_ratio: float = 1 / 16) -> None:
        super().__init__()
        self.attn = GlobalContext(dim, fuse_add=True, fuse_scale=False, rd_ratio=rd_ratio)
        nn.init.zeros_(self.attn.mlp_add.fc2.bias)  # timm zeroes only the weight; GCNet zeroes both


# FcaNet's 16 lowest-error frequencies ("top16") on a 7x7 DCT grid, as (u, v) pairs.
FCA_TOP16 = ((0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
             (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 6), (3, 5))


def dct_filters(dim: int, size: int = 7, freqs: tuple[tuple[int, int], ...] = FCA_TOP16) -> torch.Tensor:
    """``(dim, size, size)`` 2D DCT-II basis images; channel ``c`` gets frequency
    ``freqs[c * len(freqs) // dim]`` (contiguous channel groups, as FcaNet)."""
    n = torch.arange(size, dtype=torch.float64)

    def basis(u: int) -> torch.Tensor:  # (size,) orthonormal DCT-II row
        b = torch.cos(math.pi * u * (n + 0.5) / size) / math.sqrt(size)
        return b if u == 0 else b * math.sqrt(2)

    idx = torch.arange(dim) * len(freqs) // dim  # (dim,) frequency of each channel
    imgs = torch.stack([basis(u)[:, None] * basis(v)[None, :] for u, v in freqs])  # (F, size, size)
    return imgs[idx].float()


@CHANNEL_ATTNS.register("fca")
class FrequencyChannelAttn(nn.Module):
    """FcaNet multi-spectral channel attention: the grid is average-pooled to 7x7 (FcaNet uses
    the stage's own resolution with the 7x7 frequencies scaled to it, and pools only other
    sizes; pooling always keeps one module for every stage), each channel group is projected
    on one 2D DCT basis image (the "top16" frequencies; frequency (0, 0) is
    global average pooling, i.e. SE), then FC (C/16) -> ReLU -> FC -> sigmoid gates the input.
    ``(B, H, W, C) -> (B, H, W, C)``."""

    registry_name = ""

    def __init__(self, dim: int, rd_ratio: float = 1 / 16, dct_size: int = 7) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(dct_size)
        self.register_buffer("dct", dct_filters(dim, dct_size), persistent=False)  # (C, s, s)
        hidden = max(int(dim * rd_ratio), 1)
        self.fc = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, dim, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x.permute(0, 3, 1, 2))  # (B, C, s, s)
        spectrum = (pooled * self.dct.to(pooled.dtype)).sum((-2, -1))  # (B, C)
        return x * self.fc(spectrum)[:, None, None, :]  # (B, H, W, C)


class _ZPoolGate(nn.Module):
    """One triplet branch: max and mean over the first non-batch axis -> 7x7 conv -> BN -> sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, A, P, Q) -> gate (B, 1, P, Q)
        z = torch.stack([x.amax(1), x.mean(1)], dim=1)  # (B, 2, P, Q)
        return torch.sigmoid(self.bn(self.conv(z)))


@CHANNEL_ATTNS.register("triplet")
class TripletAttention(nn.Module):
    """Triplet attention: three branches gate the (H, W), (C, W) and (C, H) planes; each pools
    the remaining axis by max and mean (Z-pool), applies a 7x7 conv, BN and a sigmoid; the three
    gated tensors are averaged. No channel reduction. ``(B, H, W, C) -> (B, H, W, C)``."""

    registry_name = ""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.hw, self.cw, self.ch = (_ZPoolGate(kernel_size) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g_hw = self.hw(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # pool C: gate (B, H, W, 1)
        g_cw = self.cw(x)  # pool H: gate (B, 1, W, C)
        g_ch = self.ch(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # pool W: gate (B, H, 1, C)
        return x * (g_hw + g_cw + g_ch) / 3  # (B, H, W, C)
