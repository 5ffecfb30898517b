"""SQLAlchemy plumbing the evaluators' caches and the study store share.

``normalize_url`` picks the PostgreSQL driver that is installed; ``fork_safe`` makes an engine
safe to use on both sides of ``os.fork`` (a forked child must never reuse its parent's pooled
connections: both would talk over one socket and the server sees garbled protocol, the
``DatabaseError``s of a LatencyCache used in a parent and then in forked workers). This follows
SQLAlchemy's guidance, "Using Connection Pools with Multiprocessing or os.fork()": the child
disposes the inherited pool with ``close=False`` (the parent's connections stay open for the
parent) and opens its own connections.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

_ENGINES: weakref.WeakSet = weakref.WeakSet()  # every engine handed to fork_safe, while it lives
_LOCK = threading.Lock()


def normalize_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://`` when psycopg (3) is missing: SQLAlchemy 2.1
    defaults to psycopg 3, while this package ships psycopg2-binary."""
    import importlib.util

    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(plain):]
            return "postgresql://" + url[len(plain):]
    return url


def fork_safe(engine: Any) -> Any:
    """Register ``engine`` (a SQLAlchemy ``Engine``) so that a child made by ``os.fork`` (or a
    ``fork`` multiprocessing start) starts with an empty pool of its own; returns the engine."""
    with _LOCK:
        _ENGINES.add(engine)
    return engine


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # another thread may have held it at the fork
    for engine in list(_ENGINES):
        engine.dispose(close=False)  # forget the parent's connections without closing them


os.register_at_fork(after_in_child=_after_fork_in_child)
