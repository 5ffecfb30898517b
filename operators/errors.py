"""The error family and message helpers every layer shares (written once, at the bottom).

The packages stack ``operators <- search_space <- evaluators <- nas``; anything a lower package
needs lives in the lowest one, so this module is the home of ``NasError`` (re-exported as
``nas.errors``), its subclasses, the "did you mean" hint and the one-line formatting of an
exception. It imports only the standard library.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class NasError(ValueError):
    """A user-facing error (bad study file, impossible budget, unknown name, ...).

    Subclasses ``ValueError`` so callers that validate input can catch either.
    The CLI prints ``str(err)`` as one line and exits non-zero, without a traceback.
    """


class UnknownNameError(NasError, KeyError):
    """A name no registry holds: both a ``NasError`` (a user's mistake, one line) and the
    ``KeyError`` that a ``Mapping`` raises for a missing key."""

    def __str__(self) -> str:  # KeyError would show the message repr'd, in quotes
        return str(self.args[0]) if self.args else ""


class InvalidCandidate(NasError):
    """A suggested genome that no clamping could make valid (reported as a failed trial)."""


class StoreError(NasError):
    """The store cannot be read (unreachable, not an Optuna store, unknown study)."""


class BundleError(NasError):
    """The sources could not be bundled into one file (an unsupported construct)."""


def did_you_mean(name: object, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` naming the closest of ``choices`` to ``name`` (difflib's
    ratio >= ``cutoff``), or ``""`` when none is close: the hint every unknown-name error ends with."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message, whitespace collapsed; for a wrapped driver error
    (SQLAlchemy's ``.orig``) the driver's own message. The type name when the message is empty."""
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return re.sub(r"\s+", " ", text[0]).strip() if text else type(e).__name__


def one_line(e: BaseException, *, limit: int = 500, plain: tuple[type[BaseException], ...] = ()) -> str:
    """``"TypeName: first line"`` of an exception, at most ``limit`` characters.

    A ``NasError`` (or an instance of a class in ``plain``) already speaks to the user: its
    message is given alone, without the type name.
    """
    msg = first_line(e)
    if isinstance(e, (NasError, *plain)):
        return msg[:limit]
    return f"{type(e).__name__}: {msg}"[:limit]
