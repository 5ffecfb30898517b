"""Make this project's timm model names known to timm as soon as both are imported, cheaply.

``search_space.builder`` registers ``attnnas`` (any genome, the entry point an export's
``config.json`` names) and ``attnnas_<preset>`` with timm. Importing it costs timm's and torch's
import (seconds), which ``import nas`` / ``import search_space`` must not pay. So importing any of
this project's packages calls ``install()``:

- if timm is already imported, the builder is imported now (timm's cost is already paid);
- otherwise a finder on ``sys.meta_path`` waits for ``import timm``, lets timm load as usual, then
  imports the builder right after it, so ``import nas; import timm;
  timm.create_model("local-dir:<export>")`` finds ``attnnas`` (without this,
  ``RuntimeError: Unknown model (attnnas)``).

The finder handles only the top-level ``timm`` import, steps aside once it has fired, and restores
timm's own loader on the module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
import warnings
from typing import Any

_BUILDER = "search_space.builder"
_lock = threading.Lock()


def _register_now() -> None:
    try:
        importlib.import_module(_BUILDER)
    except Exception as e:  # noqa: BLE001 - a broken registration must never break `import timm`
        warnings.warn(f"attention NAS could not register its timm models (attnnas, attnnas_<preset>): "
                      f"{type(e).__name__}: {e}", stacklevel=2)


class _ThenRegister(importlib.abc.Loader):
    """Wraps timm's loader: run it, put it back on the module, then register our models."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader
        _register_now()

    def __getattr__(self, name: str) -> Any:  # resource readers, get_code, ... of the real loader
        return getattr(self._loader, name)


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Finds ``timm`` with the other finders and wraps its loader (once)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        _remove()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenRegister(spec.loader)
        return spec


_finder: _AfterTimm | None = None


def _remove() -> None:
    global _finder
    with _lock:
        if _finder is not None and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _finder = None


def install() -> None:
    """Register the project's timm names now if timm is loaded, else right after ``import timm``."""
    global _finder
    timm = sys.modules.get("timm")
    if timm is not None:
        if hasattr(timm, "create_model") and _BUILDER not in sys.modules:
            _register_now()
        return
    with _lock:
        if _finder is None:
            _finder = _AfterTimm()
            sys.meta_path.insert(0, _finder)
