"""The ``synthetic`` evaluator's landscape: a deterministic stand-in for accuracy.

For tests and the sampler benchmark only; it says nothing about real accuracy.
"""

from __future__ import annotations

import math

from search_space.genome import ArchSpec

_CONV_LIKE = {"sepconv": 1.0, "pool": 0.6, "identity": 0.0}
_ATTN_LIKE = {"attention": 1.0, "window": 0.9, "sra": 0.85, "sra_linear": 0.8}


def synthetic_accuracy(spec: ArchSpec, flops: float) -> float:
    """A deterministic stand-in for accuracy in [0, 1], for tests and the sampler benchmark only.

    It has the structure NAS results report, so that a sampler that learns beats one that
    does not: accuracy saturates in FLOPs; convolution-like mixers pay off in early
    (high-resolution) stages and attention in late ones (CoAtNet, Dai et al. 2021); a conv stem
    helps (Xiao et al. 2021); attention needs a position encoding; plus a genome-hashed jitter.
    """
    n = len(spec.stages)
    fit = 0.0
    for i, s in enumerate(spec.stages):
        late = (i + 0.5) / n if n > 1 else 0.5  # 0: first (large grid) .. 1: last stage
        conv, attn = _CONV_LIKE.get(s.mixer, 0.5), _ATTN_LIKE.get(s.mixer, 0.0)
        stage = conv * (1 - late) + attn * late if (conv or attn) else 0.3
        if attn and s.pos == "none":
            stage -= 0.35
        fit += stage * s.depth
    fit /= max(1, sum(s.depth for s in spec.stages))
    stem = 0.04 if spec.stem.kind == "conv" else 0.0
    shape = 0.03 if n > 1 else 0.0
    jitter = (int(spec.arch_id[:8], 16) / 0xFFFFFFFF - 0.5) * 0.02
    acc = 0.30 + 0.30 * (1 - math.exp(-flops / 1.5e6)) + 0.28 * fit + stem + shape + jitter
    return float(min(1.0, max(0.0, acc)))


def synthetic_curve(final: float, epochs: int) -> list[float]:
    """Per-epoch accuracies (epochs 1..``epochs``) rising to ``final`` at the last epoch."""
    return [final * (1 - 0.5 ** (e + 1)) / (1 - 0.5 ** (epochs + 1)) for e in range(1, epochs + 1)]
