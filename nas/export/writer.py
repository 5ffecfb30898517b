"""The export folder writer: ``export_genome`` (config.json, weights, model card, standalone file)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

import search_space.builder as _builder
from nas._standalone import BundleError, load_body, standalone_source
from nas.errors import NasError
from nas.export.card import ExportInfo, model_card
from nas.export.registry import _check_free, _check_name, _record, default_name
from nas.export.weights import WEIGHTS_FILE, load_state_dict_for, save_weights
from search_space.genome import ArchSpec


def export_genome(
    spec: ArchSpec | dict | str,
    out: str | Path,
    *,
    name: str | None = None,
    weights: str | Path | dict[str, torch.Tensor] | None = None,
    info: ExportInfo | None = None,
    force: bool = False,
    register: bool = True,
    self_check: bool = True,
) -> Path:
    """Write the export folder ``out`` for ``spec`` (see the module docstring); returns its path.

    ``weights``: a state dict or a file (safetensors or torch) that must fit the genome exactly.
    ``force`` replaces an existing ``out``. ``register`` records ``name`` so ``nas.export.register_exports()``
    registers it with timm in later processes. ``self_check`` builds the standalone file's model
    and checks it gives the package model's outputs.
    """
    spec = _builder._as_spec(spec).validate()
    info = info or ExportInfo()
    name = name or default_name(info.study, info.trial, spec)
    _check_name(name)
    out = Path(out).expanduser().absolute()
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise NasError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise NasError(f"{out} exists and is not a folder")
    if register:
        _check_free(name, out, force)

    model = _builder.build_model(spec).eval()
    if weights is not None:
        what = "the weights" if isinstance(weights, dict) else f"the weights {weights}"
        load_state_dict_for(model, weights, what)
        info.weights_source = info.weights_source or ("a state dict" if isinstance(weights, dict) else str(weights))
    if info.params is None:
        info.params = sum(p.numel() for p in model.parameters())
    if info.flops is None:
        info.flops = _count_flops(model, spec)

    try:
        src = standalone_source(spec, name, origin=_origin(info), module=f"{name}_model", model=model)
    except BundleError as e:
        raise NasError(f"could not write the standalone file: {e}") from None
    if self_check:
        _self_check(src, spec, model)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        if weights is not None:
            save_weights(model, tmp / WEIGHTS_FILE, metadata={"format": "pt", "genome": spec.to_json(), "name": name})
        (tmp / "config.json").write_text(json.dumps(_config(spec, model, name, info, weights is not None), indent=2))
        (tmp / f"{name}_model.py").write_text(src.text)
        (tmp / "README.md").write_text(model_card(spec, model, name, info, weights is not None, out))
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if register:
        _record(name, spec, out, weights is not None)
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _count_flops(model: torch.nn.Module, spec: ArchSpec) -> int | None:
    try:
        from evaluators import count_flops

        return int(count_flops(model, input_size=(spec.in_chans, *spec.img_hw)))
    except Exception:  # noqa: BLE001 - the card says "not recorded" rather than failing the export
        return None


def _self_check(src, spec: ArchSpec, model: torch.nn.Module) -> None:
    """Build the standalone file's model, load the package model's weights, compare outputs."""
    try:
        mod = load_body(src)
        other = mod.NasNet(spec.to_dict()).eval()
        other.load_state_dict(model.state_dict(), strict=True)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, spec.in_chans, *spec.img_hw, generator=g)
        with torch.no_grad():
            diff = (model(x) - other(x)).abs().max().item()
    except Exception as e:  # noqa: BLE001
        raise NasError(f"the generated standalone file failed its self-check: {type(e).__name__}: {e}") from None
    if not diff <= 1e-6:
        raise NasError(f"the generated standalone file's model differs from the package's (max |diff| {diff:.3g})")


def _origin(info: ExportInfo) -> str:
    if info.study is None:
        return "Exported from a genome."
    return f"Exported from study {info.study!r}, trial {info.trial}."


def _config(spec: ArchSpec, model: torch.nn.Module, name: str, info: ExportInfo, has_weights: bool) -> dict[str, Any]:
    cfg = _builder._default_cfg(**_builder.pretrained_cfg_for(spec))
    cfg.pop("url", None)
    cfg["fixed_input_size"] = False
    return {
        "architecture": "attnnas",
        "num_classes": spec.num_classes,
        "num_features": model.num_features,
        "model_args": {"genome": spec.to_dict()},
        "pretrained_cfg": cfg,
        "attnnas": {  # not read by timm: provenance for people and tools
            "name": name, "arch_id": spec.arch_id, "summary": spec.summary(), "weights": has_weights,
            "study": info.study, "trial": info.trial, "flops": info.flops, "params": info.params,
            "latency_ms": info.latency_ms, "latency_device": info.latency_device, "accuracy": info.accuracy,
            "standalone": f"{name}_model.py",
        },
    }


