"""Contextual relative position encoding on keys (iRPE, product method).

Paper: Wu et al. 2021, "Rethinking and Improving Relative Position Encoding for Vision
Transformer" (iRPE). The logit between tokens i and j gains ``q_i . r_{b(i, j)}``: a learned
vector ``r`` per bucket of the 2D offset, so the bias depends on the query's content
("contextual" mode, applied to keys). Offsets are bucketed per axis with the paper's
piecewise function ``g`` (exact up to ``alpha``, logarithmic up to ``gamma``, clipped at
``beta``), and the 2D bucket is the product ``(g(dy), g(dx))`` on a ``(2 beta + 1)^2`` grid.
Defaults follow the paper's released config (ratio 1.9: alpha 1.9, beta 3.8, gamma 15.2; one
table shared by all heads).

Vectorised: ``q @ table^T`` gives ``(B, heads, N, buckets)``, then a gather by the ``(N, N)``
bucket index gives the ``(B, heads, N, N)`` bias. Buckets depend only on offsets, so the
table works unchanged on any grid; only the index is recomputed.
"""

from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from torch import nn

from operators.base import AttnPosEncoding
from operators.registry import POS_ENCODINGS


def piecewise_index(rel: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """iRPE's piecewise bucket of signed offsets: ``round(x)`` for ``|x| <= alpha``, else
    ``sign(x) * min(int(beta), round(alpha + ln(|x|/alpha) / ln(gamma/alpha) * (beta - alpha)))``."""
    rel = rel.float()
    mag = rel.abs()
    far = alpha + torch.log(mag.clamp(min=alpha) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    far = far.round().clamp(max=int(beta))
    return torch.where(mag <= alpha, rel.round(), rel.sign() * far).long()


def product_buckets(h: int, w: int, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """``(h*w, h*w)`` bucket ids ``(g(dy) + B) * (2B + 1) + g(dx) + B`` with ``B = int(beta)``."""
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N): offset of query i from key j
    b = int(beta)
    return (piecewise_index(rel[0], alpha, beta, gamma) + b) * (2 * b + 1) + piecewise_index(rel[1], alpha, beta, gamma) + b


@POS_ENCODINGS.register("irpe")
class ContextualRPE(AttnPosEncoding):
    """iRPE contextual product-method encoding on keys: bias ``q_i . r_{bucket(i, j)}``."""

    ratio = 1.9  # alpha = ratio, beta = 2 ratio, gamma = 8 ratio (the paper's released default)
    no_weight_decay_params = ("table",)

    def __init__(self, *, dim: int, num_heads: int, grid_size: tuple[int, int]) -> None:
        super().__init__(dim=dim, num_heads=num_heads, grid_size=grid_size)
        self.alpha, self.beta, self.gamma = self.ratio, 2 * self.ratio, 8 * self.ratio
        self.num_buckets = (2 * int(self.beta) + 1) ** 2
        self.head_dim = dim // num_heads
        self.table = nn.Parameter(torch.zeros(self.num_buckets, self.head_dim))  # shared by all heads
        trunc_normal_(self.table, std=0.02)
        self.register_buffer("index", self._buckets(self.grid_size), persistent=False)

    def _buckets(self, grid: tuple[int, int]) -> torch.Tensor:
        return product_buckets(*grid, self.alpha, self.beta, self.gamma)

    def bias(self, q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        B, heads, N, d = q.shape
        index = self.index if tuple(grid) == self.grid_size else self._buckets(tuple(grid)).to(q.device)
        # SDPA scales q.k by d^-1/2; iRPE scales the query for its term the same way
        qr = (q * d ** -0.5) @ self.table.to(q.dtype).T  # (B, heads, N, buckets)
        return qr.gather(-1, index.expand(B, heads, N, N))  # (B, heads, N, N)
