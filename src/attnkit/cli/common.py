"""Helpers shared by the commands that read sentences: stdin lines and one-line notes on stderr."""

from __future__ import annotations

import sys

from attnkit.data.lines import decode_lines


def note(message: str, indices: list[int], base: int = 1, what: str = "line") -> None:
    """One stderr line about some input lines (``indices`` 0-based; printed ``base``-based, a few shown)."""
    if not indices:
        return
    shown = ", ".join(str(i + base) for i in indices[:10]) + (", ..." if len(indices) > 10 else "")
    print(f"attnkit: note: {len(indices)} {what}(s) {message} ({what} {shown})", file=sys.stderr)


def stdin_lines() -> list[str]:
    """Standard input's lines (UTF-8 required; one error naming the line and byte otherwise)."""
    return decode_lines(sys.stdin.buffer.read(), "standard input")
