"""The machinery of the study-file schema: sections declared once as dataclasses, parsed from
their fields, with errors that name the file, the line and the closest valid key.

A section of a study file is a frozen dataclass (``nas.study``); each field says how the file
gives it, and nothing else does:

- its type is its annotation: ``int``, ``float``, ``str``, ``bool``, a nested section (a table),
  or any of these ``| None``;
- its ``metadata`` (``evaluators.config.setting``) holds ``doc`` and the rules ``min`` / ``max``
  (inclusive), ``gt`` (exclusive lower bound), ``choices``, ``what`` (how a value is described in
  an error), and optionally ``parse``: a function ``(ctx, table, key, value) -> value`` for the
  irregular fields (counts like ``"50M"``, lists of registered names, ``[low, high]`` ranges);
- ``borrow(Library, "name", ...)`` takes a field of a library dataclass (``evaluators.DataSpec``,
  ``evaluators.ProxyConfig``) with its type, doc and rules; what the study changes (a default, a
  narrower rule) is written in that one call.

``parse_fields`` checks a table's keys (unknown key -> the closest valid one and its line) and
parses the keys present; ``from_plain`` rebuilds a dataclass tree from its ``asdict`` JSON.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import Field
from typing import Any

from evaluators.config import setting
from nas.errors import NasError, did_you_mean

__all__ = ["Ctx", "setting", "borrow", "parse_fields", "from_plain", "check_keys", "table_of", "join",
           "typed", "int_value", "num_value", "choice", "str_list", "fields_doc"]


class Ctx:
    """Where we are in the file, to name the file, the table and the line in errors."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def line_of(self, key: str, table: str) -> int | None:
        """Best effort: the line where ``key`` is assigned (after ``[table]`` if present)."""
        start = 0
        if table:
            header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
            for i, line in enumerate(self.lines):
                if header.match(line):
                    start = i
                    break
        pat = re.compile(r"(^|[\s{,])" + re.escape(key) + r"\s*=")
        for i in range(start, len(self.lines)):
            if pat.search(self.lines[i].split("#", 1)[0]):
                return i + 1
        for i, line in enumerate(self.lines):  # e.g. dotted keys or [table.key] headers
            if re.search(r"\b" + re.escape(key) + r"\b", line.split("#", 1)[0]):
                return i + 1
        return None

    def error(self, table: str, key: str | None, msg: str) -> NasError:
        line = self.line_of(key, table) if key else None
        where = f"{self.path}" + (f", line {line}" if line else "")
        scope = f"[{table}] " if table else ""
        return NasError(f"{where}: {scope}{msg}")


# --- declaring fields --------------------------------------------------------------------
def borrow(owner: type, name: str, **changes: Any) -> Any:
    """The field ``name`` of the library dataclass ``owner`` (its doc and rules), for a study
    section. ``changes`` are the study's differences: ``default=`` and any rule (``max=``,
    ``choices=``, ...); the metadata records where the field comes from and the library default."""
    (f,) = [f for f in dataclasses.fields(owner) if f.name == name]
    default = changes.pop("default", f.default)
    meta = {**f.metadata, **changes, "from": f"{owner.__name__}.{name}", "library_default": f.default}
    return dataclasses.field(default=default, metadata=meta)


def fields_doc(cls: type) -> dict[str, str]:
    """Field name -> its one-line doc (for help texts and the schema reference)."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


# --- checking values ---------------------------------------------------------------------
def join(a: str, b: str) -> str:
    return f"{a}.{b}" if a else b


def check_keys(ctx: Ctx, table: str, d: dict[str, Any], allowed: list[str]) -> None:
    for k in d:
        if k not in allowed:
            hint = did_you_mean(k, allowed, cutoff=0.5)
            raise ctx.error(table, k, f"unknown key {k!r}{hint}; valid keys: {', '.join(allowed)}")


def table_of(ctx: Ctx, d: dict[str, Any], key: str, parent: str) -> dict[str, Any]:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise ctx.error(parent, key, f"{key!r} must be a table ([{join(parent, key)}]), got {type(v).__name__}")
    return v


def typed(ctx: Ctx, table: str, key: str, value: Any, kind: type | tuple, what: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ctx.error(table, key, f"{key!r} must be {what}, got {value!r}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kinds):
        raise ctx.error(table, key, f"{key!r} must be {what}, got {value!r}")
    return value


def int_value(ctx: Ctx, table: str, key: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    v = typed(ctx, table, key, value, int, "an integer")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ctx.error(table, key, f"{key!r} must be an integer {rng}, got {v}")
    return v


def num_value(ctx: Ctx, table: str, key: str, value: Any, lo: float | None = None, gt: float | None = None) -> float:
    v = typed(ctx, table, key, value, float, "a number")
    if gt is not None and v <= gt:
        raise ctx.error(table, key, f"{key!r} must be a positive number, got {v}" if gt == 0
                        else f"{key!r} must be > {gt}, got {v}")
    if lo is not None and v < lo:
        raise ctx.error(table, key, f"{key!r} must be >= {lo}, got {v}")
    return v


def choice(ctx: Ctx, table: str, key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        hint = did_you_mean(str(value), allowed)
        raise ctx.error(table, key, f"{key!r} must be one of {', '.join(allowed)}; got {value!r}{hint}")
    return value


def str_list(ctx: Ctx, table: str, key: str, value: Any, allowed: list[str] | None = None,
             registry: Any = None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ctx.error(table, key, f"{key!r} must be a non-empty list of names, got {value!r}")
    for v in value:
        if registry is not None and v not in registry:
            raise ctx.error(table, key, f"{key!r}: {registry.unknown_message(v)}")
        if allowed is not None and v not in allowed:
            hint = did_you_mean(v, allowed)
            raise ctx.error(table, key, f"{key!r}: {v!r} is not allowed{hint}; allowed: {', '.join(allowed)}")
    return tuple(value)


# --- parsing by the fields ---------------------------------------------------------------
def _base(hint: Any) -> Any:
    """``X | None`` -> ``X``; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def parse_value(ctx: Ctx, table: str, f: Field, hint: Any, value: Any) -> Any:
    """One field's value from the file, checked by its type and metadata."""
    meta, key = f.metadata, f.name
    if "parse" in meta:
        return meta["parse"](ctx, table, key, value)
    base = _base(hint)
    if dataclasses.is_dataclass(base):
        if not isinstance(value, dict):
            raise ctx.error(table, key, f"{key!r} must be a table ([{join(table, key)}]), got {type(value).__name__}")
        return base(**parse_fields(ctx, join(table, key), value, base))
    if "choices" in meta:
        return choice(ctx, table, key, value, meta["choices"])
    if base is bool:
        return typed(ctx, table, key, value, bool, meta.get("what", "true or false"))
    if base is int:
        return int_value(ctx, table, key, value, meta.get("min"), meta.get("max"))
    if base is float:
        return num_value(ctx, table, key, value, lo=meta.get("min"), gt=meta.get("gt"))
    if base is str:
        return typed(ctx, table, key, value, str, meta.get("what", "a string"))
    raise TypeError(f"the schema has no parser for field {key!r} of type {hint!r}: give it metadata 'parse'")


def parse_fields(ctx: Ctx, table: str, d: dict[str, Any], cls: type,
                 only: list[str] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that the table ``d`` gives (the others keep their
    defaults): unknown keys are refused with the closest valid one, values checked by field."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if (only is None or f.name in only)]
    check_keys(ctx, table, d, [f.name for f in fields])
    return {f.name: parse_value(ctx, table, f, hints[f.name], d[f.name]) for f in fields if f.name in d}


def from_plain(hint: Any, value: Any) -> Any:
    """Rebuild a value of type ``hint`` (a dataclass tree, tuples, scalars) from its
    ``dataclasses.asdict`` JSON; fields missing from ``value`` keep their defaults."""
    if value is None:
        return None
    base = _base(hint)
    if dataclasses.is_dataclass(base):
        hints = typing.get_type_hints(base)
        return base(**{f.name: from_plain(hints[f.name], value[f.name])
                       for f in dataclasses.fields(base) if f.name in value})
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v) for v in value)
        return tuple(from_plain(a, v) for a, v in zip(args, value, strict=True))
    return value
