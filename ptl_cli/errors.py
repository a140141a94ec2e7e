"""Errors that the CLI turns into one-line messages instead of tracebacks.

``UserError`` is bad input (exit status 2): an unknown name, a malformed recipe, missing data.
``RunFailure`` is a failure while running (exit status 1): NaN loss, an exhausted disk.
Both carry a message that says what went wrong, where, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PtlError(Exception):
    """Base class for errors the CLI reports in one line."""

    exit_code = 1


class UserError(PtlError):
    """Bad input from the user: exit status 2."""

    exit_code = 2


class RunFailure(PtlError):
    """A run failed at run time: exit status 1. The last good checkpoint is kept."""

    exit_code = 1


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return a '; did you mean X?' suffix for close matches, or a list of the known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}?"
    if not known:
        return "none are installed"
    shown = ", ".join(known[:25]) + (", ..." if len(known) > 25 else "")
    return f"known: {shown}"
