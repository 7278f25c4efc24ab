"""How an error from another library is quoted inside one of the package's own messages."""

from __future__ import annotations

from typing import Optional

__all__ = ["describe_error"]


def describe_error(exc: BaseException, limit: Optional[int] = 200) -> str:
    """``Type: first line of the message`` (cut at ``limit`` characters; None: whole).

    Library messages can run over many lines (tracebacks of worker processes,
    tensor dumps); the first line names the problem.  An empty message gives
    the type alone.
    """
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0][:limit]}"
