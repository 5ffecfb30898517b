"""Proxy-trained weights of a study's trials: where they live and how they are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.study import StudySpec
from search_space.genome import ArchSpec


def weights_dir(study: StudySpec) -> Path:
    """Where a study keeps proxy-trained weights: ``<store dir>/<name>_weights`` for SQLite,
    ``./studies/<name>_weights`` otherwise (put it on a shared disk for many machines)."""
    url = study.storage
    base = Path(url[len("sqlite:///"):]).resolve().parent if url.startswith("sqlite:///") else Path.cwd() / "studies"
    return base / f"{study.name}_weights"


def save_trained_weights(study: StudySpec, spec: ArchSpec, model: Any) -> Path:
    """Write a trained model's state dict as ``<arch_id>.safetensors`` (one genome, one training)."""
    from nas.export.weights import save_weights  # shared tensors once, atomic

    folder = weights_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    return save_weights(model, folder / f"{spec.arch_id}.safetensors")
