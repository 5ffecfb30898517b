"""Errors raised for users: each says what was wrong and what is allowed."""

from __future__ import annotations


class NasError(ValueError):
    """A user-facing error (bad study file, impossible budget, unknown name, ...).

    Subclasses ``ValueError`` so callers that validate input can catch either.
    The CLI prints ``str(err)`` as one line and exits non-zero, without a traceback.
    """
