"""Helpers shared by the commands: stdin lines, one-line notes on stderr, the --dtype option."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from attnkit.data.lines import decode_lines
from attnkit.tasks.precision import DTYPE_CHOICES


def note(message: str, indices: list[int], base: int = 1, what: str = "line") -> None:
    """One stderr line about some input lines (``indices`` 0-based; printed ``base``-based, a few shown)."""
    if not indices:
        return
    shown = ", ".join(str(i + base) for i in indices[:10]) + (", ..." if len(indices) > 10 else "")
    print(f"attnkit: note: {len(indices)} {what}(s) {message} ({what} {shown})", file=sys.stderr)


def stdin_lines() -> list[str]:
    """Standard input's lines (UTF-8 required; one error naming the line and byte otherwise)."""
    return decode_lines(sys.stdin.buffer.read(), "standard input")


def add_dtype_arg(p: argparse.ArgumentParser) -> None:
    """``--dtype auto|fp32|bf16|int8``: the inference precision of the model a command opens."""
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32",
                   help="inference precision: fp32 (default, the reference), bf16, int8 (CPU only; saved by "
                        "`attnkit quantize` or made at load), or auto (the fastest the hardware has within the "
                        "accuracy bounds; a note on stderr says which; docs/speed.md)")


def dtype_note(run: Any, requested: str, name: str = "") -> None:
    """With --dtype auto, one stderr line: the mode picked and why (and the saved weights it loaded)."""
    if requested != "auto":
        return
    source = f"; weights from {run.quantized_from}" if run.quantized_from is not None else ""
    print(f"attnkit: note: --dtype {run.precision.reason}{source}{' (' + name + ')' if name else ''}",
          file=sys.stderr)
