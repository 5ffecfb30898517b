"""Parameter counts, in total and per stage.

Works on real and on ``meta``-device models alike (only shapes are read), so a genome can be
sized without allocating its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class ParamCount:
    """``int(result)`` is the total; ``by_part`` maps ``"stem"``, ``"stages.0"``, ... ``"head"``
    (a ``NasNet``'s stages, or any other model's top-level children) to their parameters."""

    total: int
    by_part: dict[str, int] = field(default_factory=dict)
    trainable: int = 0

    def __int__(self) -> int:
        return self.total

    def __index__(self) -> int:
        return self.total


def _numel(module: nn.Module, seen: set[int]) -> int:
    n = 0
    for p in module.parameters():
        if id(p) not in seen:  # shared (tied) parameters count once
            seen.add(id(p))
            n += p.numel()
    return n


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Total number of parameters of ``model`` (tied parameters once)."""
    seen: set[int] = set()
    return sum(p.numel() for p in model.parameters()
               if (not trainable_only or p.requires_grad) and not (id(p) in seen or seen.add(id(p))))


def params_by_part(model: nn.Module) -> ParamCount:
    """Parameters per part: ``stages.<i>`` for each stage of a model with a ``stages``
    container (``NasNet`` and timm's hierarchical models), every other top-level child by name,
    and parameters held directly by the root under ``"<root>"``."""
    seen: set[int] = set()
    parts: dict[str, int] = {}
    for name, child in model.named_children():
        if name == "stages" and isinstance(child, (nn.Sequential, nn.ModuleList)):
            for i, stage in enumerate(child):
                parts[f"stages.{i}"] = _numel(stage, seen)
        else:
            parts[name] = _numel(child, seen)
    own = sum(p.numel() for p in model.parameters(recurse=False) if id(p) not in seen)
    if own:
        parts["<root>"] = own
    total = sum(parts.values())
    return ParamCount(total, parts, count_params(model, trainable_only=True))
