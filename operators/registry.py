"""Name -> class registries, one per kind of operator.

The registries fill when the operator families are imported. ``import operators`` does not import
them (so ``import operators.errors`` stays cheap, without torch); the first lookup does, through
the loader ``operators`` installs with ``set_loader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from operators.errors import UnknownNameError, did_you_mean

T = TypeVar("T")

_RAISE: Any = object()  # no default given to ``get``
_LOADER: list[Callable[[], None]] = []  # imports every operator family once (see operators/__init__)


def set_loader(load: Callable[[], None]) -> None:
    """Install the function that imports every operator family; lookups call it first."""
    _LOADER[:] = [load]


class Registry(Mapping[str, type[T]], Generic[T]):
    """A read-only ``Mapping`` from operator names to classes (iterated in name order).

    ``@MIXERS.register("window")`` adds a class (the only way in: there is no item assignment);
    ``MIXERS["window"]`` or ``MIXERS.get(name)`` looks one up and raises ``UnknownNameError`` (a
    ``NasError`` and a ``KeyError``) listing the known names and the closest one;
    ``MIXERS.get(name, default)`` returns ``default`` instead. ``dict(MIXERS)``, ``MIXERS.items()``,
    ``keys()``, ``values()`` and ``==`` behave as for any ``Mapping``.
    """

    __hash__ = object.__hash__  # one registry per kind: hashed by identity (Mapping sets None)

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.registry_name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return add

    def _all(self) -> dict[str, type[T]]:
        for load in _LOADER:
            load()
        return self._entries

    def get(self, name: str, default: Any = _RAISE) -> type[T]:
        """The class registered as ``name``; unknown: ``default`` if given, else ``UnknownNameError``."""
        entries = self._all()
        try:
            return entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            if default is not _RAISE:
                return default
            raise UnknownNameError(self.unknown_message(name)) from None

    def __getitem__(self, name: str) -> type[T]:
        return self.get(name)

    def unknown_message(self, name: str) -> str:
        known = self._all()
        return f"unknown {self.kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(sorted(known))}"

    def __contains__(self, name: object) -> bool:
        entries = self._all()
        try:
            return name in entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._all()))

    def __len__(self) -> int:
        return len(self._all())

    def names(self) -> list[str]:
        return sorted(self._all())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


MIXERS: Registry = Registry("token mixer")
POS_ENCODINGS: Registry = Registry("position encoding")
STEMS: Registry = Registry("stem")
DOWNSAMPLERS: Registry = Registry("downsampler")
CHANNEL_MLPS: Registry = Registry("channel MLP")
CHANNEL_ATTNS: Registry = Registry("channel attention")
