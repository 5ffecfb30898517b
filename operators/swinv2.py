"""Swin V2 window attention: scaled cosine attention with a log-spaced continuous position bias.

Paper: Liu et al. 2022, "Swin Transformer V2: Scaling Up Capacity and Resolution". The logits are
cosine similarities of queries and keys times a learned per-head temperature
``exp(min(logit_scale, log 100))`` (initialised to 10), plus the log-CPB ``16 * sigmoid(MLP)``
(``operators.pos_log_cpb``), inside Swin's shifted windows. Cost: O(N w^2 C) for window size w.

Built on ``operators.window_attention.WindowAttention`` (windows, shifts, padding masks) with
the cosine similarity expressed through the attention-internal encoding hooks: ``rotate`` hands the
fused SDPA kernel ``normalize(q) * scale * sqrt(d)`` and ``normalize(k)`` (SDPA divides by
``sqrt(d)``) and ``bias`` adds the log-CPB. A test loads the weights of
``timm.models.swin_transformer_v2.WindowAttention`` and compares outputs. Deviation: timm and the
paper keep the key bias at zero; here q, k and v share one ``qkv`` bias (the key bias is learned).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from operators.pos_log_cpb import LogCPB
from operators.registry import MIXERS
from operators.window_attention import WindowAttention

MAX_LOGIT_SCALE = math.log(1.0 / 0.01)  # temperatures are clamped at 100


class ScaledCosineLogCPB(LogCPB):
    """Cosine attention with a learned per-head temperature (via ``rotate``) plus the log-CPB."""

    no_weight_decay_params = (*LogCPB.no_weight_decay_params, "logit_scale")

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))

    def rotate(self, q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.clamp(self.logit_scale, max=MAX_LOGIT_SCALE).exp().to(q.dtype)  # (heads, 1, 1)
        q = F.normalize(q, dim=-1) * (scale * math.sqrt(q.shape[-1]))  # SDPA divides by sqrt(d)
        return q, F.normalize(k, dim=-1)


@MIXERS.register("window_cosine")
class CosineWindowAttention(WindowAttention):
    """Swin V2's shifted-window scaled cosine attention with the log-spaced continuous position bias."""

    supported_pos = frozenset()  # the log-CPB is built in

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
        super().__init__(dim, grid_size=grid_size, pos_encoding="none", block_index=block_index,
                         num_heads=num_heads, window_size=window_size, shift=shift, qkv_bias=qkv_bias)
        self.pos = ScaledCosineLogCPB(dim=dim, num_heads=num_heads, grid_size=self.window)
