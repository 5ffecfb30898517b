"""Classifier heads on the final ``(B, H, W, C)`` grid.

Papers: Touvron et al. 2021, "Going deeper with Image Transformers" (CaiT class attention:
a class token that attends over the patch tokens); Yu et al. 2023, "MetaFormer Baselines for
Vision" (MlpHead).
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models.metaformer import SquaredReLU
from torch import nn

from operators.base import attend, merge_heads, split_heads


class ClassAttentionPool(nn.Module):
    """A learned class token attends once over all tokens (CaiT's class attention) -> (B, C)."""

    no_weight_decay_params = ("cls_token",)

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads if dim % num_heads == 0 else 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        trunc_normal_(self.cls_token, std=0.02)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        tokens = torch.cat([self.cls_token.expand(B, -1, -1), x.reshape(B, H * W, C)], dim=1)  # (B, 1+N, C)
        q = split_heads(self.q(tokens[:, :1]), self.num_heads)  # (B, heads, 1, d)
        k, v = self.kv(tokens).chunk(2, dim=-1)
        out = attend(q, split_heads(k, self.num_heads), split_heads(v, self.num_heads))  # (B, heads, 1, d)
        return self.cls_token[:, 0] + self.proj(merge_heads(out))[:, 0]  # (B, C)


class ClassifierHead(nn.Module):
    """Pool -> [MLP hidden layer] -> dropout -> fc. ``fc`` is the classifier timm resets."""

    def __init__(self, dim: int, num_classes: int, *, pool: str = "avg", mlp_ratio: float = 0.0,
                 drop_rate: float = 0.0, num_heads: int = 1) -> None:
        super().__init__()
        self.pool_type = pool
        self.pool = ClassAttentionPool(dim, num_heads) if pool == "cls" else None
        self.mlp_ratio = mlp_ratio
        self.dim = dim
        self.drop = nn.Dropout(drop_rate)
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        self.num_classes = num_classes
        if self.mlp_ratio and num_classes > 0:
            hidden = int(self.dim * self.mlp_ratio)
            self.fc = nn.Sequential(nn.Linear(self.dim, hidden), SquaredReLU(), nn.LayerNorm(hidden),
                                    nn.Linear(hidden, num_classes))
        else:
            self.fc = nn.Linear(self.dim, num_classes) if num_classes > 0 else nn.Identity()

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (B, C)``."""
        return self.pool(x) if self.pool is not None else x.mean(dim=(1, 2))

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pooled(x))  # (B, C)
        return x if pre_logits else self.fc(x)
