"""Channel attention applied after the token mixer (the block's ``channel_attn`` knob).

Papers: Hu et al. 2018, "Squeeze-and-Excitation Networks" (SE); Wang et al. 2020,
"ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks" (ECA);
Woo et al. 2018, "CBAM: Convolutional Block Attention Module" (CBAM).

Each is built as ``Cls(dim)`` and maps a channels-last grid ``(B, H, W, C)`` to the same shape.
The modules are timm's (``timm.layers.SEModule``, ``EcaModule``, ``cbam.CbamModule``), which are
NCHW: we hand them a permuted view (no copy; it is NCHW with channels-last strides) and permute
the result back.
"""

from __future__ import annotations

import torch
from timm.layers import EcaModule, SEModule
from timm.layers.cbam import CbamModule
from torch import nn

from operators.registry import CHANNEL_ATTNS


class _NchwChannelAttn(nn.Module):
    """Runs an NCHW timm module ``self.attn`` on a channels-last grid."""

    registry_name = ""
    attn: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)


@CHANNEL_ATTNS.register("se")
class SqueezeExcite(_NchwChannelAttn):
    """SE (Hu et al. 2018): global average pool -> FC (C/16) -> ReLU -> FC (C) -> sigmoid gate."""

    def __init__(self, dim: int, rd_ratio: float = 1 / 16) -> None:
        super().__init__()
        self.attn = SEModule(dim, rd_ratio=rd_ratio)


@CHANNEL_ATTNS.register("eca")
class EfficientChannelAttn(_NchwChannelAttn):
    """ECA (Wang et al. 2020): global average pool -> 1D conv across channels with the
    paper's adaptive kernel size ``k = odd(log2(C) / 2 + 1 / 2)`` -> sigmoid gate; no reduction."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = EcaModule(dim)


@CHANNEL_ATTNS.register("cbam")
class ConvBlockAttn(_NchwChannelAttn):
    """CBAM (Woo et al. 2018): channel gate from avg- and max-pooled descriptors through a
    shared MLP (C/16), then a spatial gate from a 7x7 conv over channel-pooled maps."""

    def __init__(self, dim: int, rd_ratio: float = 1 / 16) -> None:
        super().__init__()
        self.attn = CbamModule(dim, rd_ratio=rd_ratio)
