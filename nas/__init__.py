"""attention NAS: search, store, front, dashboard and export."""

from __future__ import annotations

import search_space  # noqa: F401 - makes the project's timm names (attnnas, ...) available
from nas.errors import NasError
from nas.study import StudySpec, load_study

__all__ = ["NasError", "StudySpec", "load_study"]
__version__ = "0.1.0"
