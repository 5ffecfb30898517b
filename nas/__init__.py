"""attention NAS: search, store, front, dashboard and export."""

from __future__ import annotations

from nas.errors import NasError
from nas.study import StudySpec, load_study

__all__ = ["NasError", "StudySpec", "load_study"]
__version__ = "0.1.0"
