"""Name -> class registries, one per kind of operator."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from operator names to classes.

    ``@MIXERS.register("window")`` adds a class; ``MIXERS["window"]`` or ``MIXERS.get(name)``
    looks one up and raises ``ValueError`` listing the known names (and the closest one).
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

    def get(self, name: str) -> type[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(sorted(self._entries))}"

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, type[T]]]:
        return sorted(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


MIXERS: Registry = Registry("token mixer")
POS_ENCODINGS: Registry = Registry("position encoding")
STEMS: Registry = Registry("stem")
DOWNSAMPLERS: Registry = Registry("downsampler")
CHANNEL_MLPS: Registry = Registry("channel MLP")
CHANNEL_ATTNS: Registry = Registry("channel attention")
