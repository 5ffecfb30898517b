"""attention NAS: search, store, front, dashboard and export."""

from __future__ import annotations

from nas.errors import NasError

__all__ = ["NasError"]
__version__ = "0.1.0"
