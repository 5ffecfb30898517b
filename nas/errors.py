"""Errors raised for users: each says what was wrong and what is allowed.

The family is defined once, at the bottom of the layers (``operators.errors``), so every
package can raise it without importing upward; this module re-exports it for ``nas`` code and
for users who catch ``nas.errors.NasError``.
"""

from __future__ import annotations

from operators.errors import (
    BundleError,
    InvalidCandidate,
    NasError,
    StoreError,
    UnknownNameError,
    did_you_mean,
    first_line,
    one_line,
)

__all__ = ["NasError", "UnknownNameError", "InvalidCandidate", "StoreError", "BundleError",
           "did_you_mean", "first_line", "one_line"]
