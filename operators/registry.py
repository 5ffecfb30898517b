"""Name -> class registries, one per kind of operator.

The registries fill when the operator families are imported. ``import operators`` does not import
them (so ``import operators.errors`` stays cheap, without torch); the first lookup does, through
the loader ``operators`` installs with ``set_loader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from operators.errors import UnknownNameError, did_you_mean

T = TypeVar("T")

_LOADER: list[Callable[[], None]] = []  # imports every operator family once (see operators/__init__)


def set_loader(load: Callable[[], None]) -> None:
    """Install the function that imports every operator family; lookups call it first."""
    _LOADER[:] = [load]


class Registry(Generic[T]):
    """A named mapping from operator names to classes.

    ``@MIXERS.register("window")`` adds a class; ``MIXERS["window"]`` or ``MIXERS.get(name)``
    looks one up and raises ``UnknownNameError`` (a ``NasError``, so a ``ValueError``) listing the
    known names (and the closest one).
    """

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

    def get(self, name: str) -> type[T]:
        try:
            return self._all()[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = self._all()
        return f"unknown {self.kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(sorted(known))}"

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._all()))

    def __len__(self) -> int:
        return len(self._all())

    def names(self) -> list[str]:
        return sorted(self._all())

    def items(self) -> list[tuple[str, type[T]]]:
        return sorted(self._all().items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


MIXERS: Registry = Registry("token mixer")
POS_ENCODINGS: Registry = Registry("position encoding")
STEMS: Registry = Registry("stem")
DOWNSAMPLERS: Registry = Registry("downsampler")
CHANNEL_MLPS: Registry = Registry("channel MLP")
CHANNEL_ATTNS: Registry = Registry("channel attention")
