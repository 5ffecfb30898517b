"""Exported names: the default name, the registry file recording each export, and its timm entry points.

The registry file (``$ATTNNAS_EXPORTS``, default ``~/.config/attnnas/exports.json``) holds each
exported name with its genome and folder. Nothing here reads it at import time:
``register_exports()`` registers every recorded name with timm when called, and an export
registers its own name in the process that wrote it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

from timm.models import register_model

import search_space.builder as _builder
from nas.errors import NasError
from nas.export.weights import WEIGHTS_FILE
from search_space.genome import ArchSpec

REGISTRY_ENV = "ATTNNAS_EXPORTS"
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")

def default_name(study: str | None, trial: int | None, spec: ArchSpec) -> str:
    """``attnnas_<study>_t<trial>``, or ``attnnas_<arch_id[:8]>`` for a bare genome."""
    if study is None:
        return f"attnnas_{spec.arch_id[:8]}"
    slug = re.sub(r"[^a-z0-9]+", "_", study.lower()).strip("_") or "study"
    return f"attnnas_{slug}_t{trial}"


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise NasError(f"--name {name!r}: an exported name must be lower-case letters, digits and '_' and not "
                       "start with a digit (it becomes a timm model name and a Python identifier)")


def registry_path() -> Path:
    """The file recording exported names: ``$ATTNNAS_EXPORTS`` or ``~/.config/attnnas/exports.json``."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "attnnas" / "exports.json"


def _read_registry() -> dict[str, dict[str, Any]]:
    path = registry_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return data.get("exports", {}) if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError) as e:
        warnings.warn(f"ignoring the unreadable export registry {path}: {e}", stacklevel=2)
        return {}


def _write_registry(entries: dict[str, dict[str, Any]]) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".exports-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump({"version": 1, "exports": entries}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def exported_names() -> dict[str, str]:
    """Recorded exported names -> their folders."""
    return {name: e.get("dir", "") for name, e in sorted(_read_registry().items())}


_registered: dict[str, str] = {}  # name -> arch_id registered in this process


def _entry_point(name: str, entry: dict[str, Any]):
    spec = ArchSpec.from_dict(entry["genome"])
    folder = Path(entry.get("dir", ""))
    weights = folder / WEIGHTS_FILE if entry.get("weights") else None
    cfg = _builder._default_cfg(**_builder.pretrained_cfg_for(spec), file=str(weights) if weights else None)

    def make(pretrained: bool = False, **kwargs: Any) -> _builder.NasNet:
        if (pretrained and (weights is None or not weights.is_file())
                and not _builder.names_weights(kwargs.get("pretrained_cfg_overlay"))):
            where = f"{weights} is missing" if weights else "it was exported without weights"
            raise NasError(f"{name} has no weights ({where}); use pretrained=False, give them with "
                           "pretrained_cfg_overlay=dict(file=...) or checkpoint_path=..., or export again with --weights")
        if kwargs.get("pretrained_cfg") is None:  # describes the checkpoint: timm adapts a new classifier to it
            kwargs["pretrained_cfg"] = dict(cfg)
        return _builder.create_nasnet(name, spec, pretrained=pretrained, **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__module__ = __name__
    make.__doc__ = f"Exported architecture {spec.summary()} (folder: {folder})."
    return make


def _register(name: str, entry: dict[str, Any]) -> None:
    """Register ``name`` with timm in this process (quietly replacing an earlier export of it)."""
    arch_id = ArchSpec.from_dict(entry["genome"]).arch_id + str(entry.get("dir")) + str(entry.get("weights"))
    if _registered.get(name) == arch_id:
        return
    fn = _entry_point(name, entry)
    globals()[name] = fn  # timm lists it in this module's __all__
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Overwriting")
        register_model(fn)
    _registered[name] = arch_id


def register_exports() -> list[str]:
    """Register every recorded export with timm; returns the names. Reads the registry file
    (``registry_path()``); importing ``nas.export`` does not call it, so call it before
    ``timm.create_model("<exported name>")`` in a new process."""
    names = []
    for name, entry in _read_registry().items():
        try:
            _register(name, entry)
            names.append(name)
        except (ValueError, KeyError, TypeError) as e:  # a stale entry must not break the import
            warnings.warn(f"skipping exported model {name!r} from {registry_path()}: {e}", stacklevel=2)
    return names


def _check_free(name: str, folder: Path, force: bool) -> None:
    """Refuse a name timm already has, or one recorded for another folder (unless ``force``)."""
    import timm

    old = _read_registry().get(name)
    if old is None and name not in _registered and timm.is_model(name):
        raise NasError(f"the name {name!r} is already a timm model; choose another with --name")
    if old is not None and Path(old.get("dir", "")) != folder and Path(old.get("dir", "")).exists() and not force:
        raise NasError(f"the name {name!r} is already exported to {old['dir']}; choose another with --name, "
                       "or pass --force to move it")


def _record(name: str, spec: ArchSpec, folder: Path, weights: bool) -> None:
    """Add ``name`` to the registry file and register it with timm in this process."""
    entries = _read_registry()
    entries[name] = {"dir": str(folder), "genome": spec.to_dict(), "weights": weights}
    _write_registry(entries)
    _register(name, entries[name])


