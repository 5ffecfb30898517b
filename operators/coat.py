"""Factorised attention with convolutional relative position encoding (CoaT).

Paper: Xu et al. 2021, "Co-Scale Conv-Attentional Image Transformers" (CoaT). Factorised
attention ``(scale) Q (softmax_N(K)^T V)``: the keys are normalised by a softmax over the tokens
and the d x d context ``softmax(K)^T V`` is formed first, so the cost is O(N C d) (linear in N,
no N x N matrix). The convolutional relative position encoding adds ``Q * dwconv(V)`` per head,
with windows 3, 5 and 7 on about 1/4, 3/8 and 3/8 of the heads (CoaT's ``{3: 2, 5: 3, 7: 3}`` for
8 heads), or one ``crpe_window`` for all heads when ``multi_window=False``. Cost of the
encoding O(N k^2 C).

Wraps timm's ``coat.FactorAttnConvRelPosEnc`` and ``coat.ConvRelPosEnc``. timm's encoding
expects a class token in front of the image tokens; this mixer has none, so the encoding is
handed a zero row in that place and its (zero) output for it is dropped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.coat import ConvRelPosEnc, FactorAttnConvRelPosEnc
from torch import nn

from operators.base import TokenMixer
from operators.registry import MIXERS


def crpe_head_split(num_heads: int, multi_window: bool, window: int) -> dict[int, int]:
    """Window size -> number of heads; CoaT's 3/5/7 split (``{3: 2, 5: 3, 7: 3}`` for 8 heads)."""
    if not multi_window:
        return {window: num_heads}
    n7 = n5 = 3 * num_heads // 8
    split = {3: num_heads - n5 - n7, 5: n5, 7: n7}
    return {k: v for k, v in split.items() if v}


class _NoClassTokenCrpe(nn.Module):
    """timm's ``ConvRelPosEnc`` on image tokens only: a zero class-token row is put in front."""

    def __init__(self, crpe: ConvRelPosEnc) -> None:
        super().__init__()
        self.crpe = crpe

    def forward(self, q: torch.Tensor, v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        pad = (0, 0, 1, 0)  # (B, h, N, d) -> (B, h, 1 + N, d)
        return self.crpe(F.pad(q, pad), F.pad(v, pad), size=size)[:, :, 1:]  # (B, h, N, d)


@MIXERS.register("coat")
class FactorisedConvAttention(TokenMixer):
    """CoaT's factorised attention (linear in N) plus convolutional relative position encoding.

    ``(B, H, W, C) -> (B, H, W, C)``. Raises ``ValueError`` (one line) when ``check`` rejects the knobs.
    """

    supported_pos = frozenset()  # the convolutional relative position encoding is built in

    def __init__(
        self,
        dim: int,
        *,
        grid_size: tuple[int, int] = (14, 14),
        pos_encoding: str = "none",
        block_index: int = 0,
        num_heads: int = 4,
        multi_window: bool = True,
        crpe_window: int = 3,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if (why := self.check(dim, tuple(grid_size), {"num_heads": num_heads, "crpe_window": crpe_window})):
            raise ValueError(f"coat: {why}")
        crpe = ConvRelPosEnc(dim // num_heads, num_heads, crpe_head_split(num_heads, multi_window, crpe_window))
        self.attn = FactorAttnConvRelPosEnc(dim, num_heads=num_heads, qkv_bias=qkv_bias,
                                            shared_crpe=_NoClassTokenCrpe(crpe))

    @classmethod
    def check(cls, dim: int, grid_size: tuple[int, int], knobs: dict[str, Any]) -> str | None:
        k = knobs.get("crpe_window", 3)
        if k < 1 or k % 2 == 0:
            return f"crpe_window={k} must be a positive odd number"
        return super().check(dim, grid_size, knobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        return self.attn(x.reshape(B, H * W, C), size=(H, W)).view(B, H, W, C)
