"""Make this project's timm model names known to timm as soon as both are imported, cheaply.

``search_space.builder`` registers ``attnnas`` (any genome, the entry point an export's
``config.json`` names) and ``attnnas_<preset>`` with timm. Importing it costs timm's and torch's
import (seconds), which ``import nas`` / ``import search_space`` must not pay. So importing any of
this project's packages calls ``install()``:

- if timm is already imported, the builder is imported now (timm's cost is already paid);
- otherwise a finder on ``sys.meta_path`` waits for ``import timm`` (and for ``operators``, which
  the builder needs, to finish loading: ``operators`` itself may be what imports timm), lets them
  load as usual, then imports the builder right after, so ``import nas; import timm;
  timm.create_model("local-dir:<export>")`` finds ``attnnas`` (without this,
  ``RuntimeError: Unknown model (attnnas)``).

The finder handles only those two top-level imports, steps aside once it has registered, and
restores their own loaders on the modules.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
import warnings
from typing import Any

_BUILDER = "search_space.builder"
_NEEDED = ("timm", "operators")  # the builder is imported once timm is loaded and operators is not half-loaded
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
        # timm is needed; operators must not be half-loaded (it may be what is importing timm)
        if (_loaded("timm") or module.__name__ == "timm") and not any(
                _initializing(n) for n in _NEEDED if n != module.__name__):
            _remove()
            _register_now()

    def __getattr__(self, name: str) -> Any:  # resource readers, get_code, ... of the real loader
        return getattr(self._loader, name)


def _loaded(name: str) -> bool:
    """``name`` is imported and done executing (not still initialising further up the stack)."""
    mod = sys.modules.get(name)
    return mod is not None and not getattr(getattr(mod, "__spec__", None), "_initializing", False)


def _initializing(name: str) -> bool:
    """``name`` is being imported further up the stack (its module exists, not yet executed)."""
    return name in sys.modules and not _loaded(name)


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Finds ``timm`` / ``operators`` with the other finders and wraps their loaders."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _NEEDED:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
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
    if _BUILDER in sys.modules:  # registered already (or registering)
        return
    if _loaded("timm") and not _initializing("operators"):
        _register_now()
        return
    with _lock:
        if _finder is None:
            _finder = _AfterTimm()
            sys.meta_path.insert(0, _finder)
