"""UTF-8 bytes -> text and lines: the one reader behind every command that takes text (files and stdin).

Every reader reports bytes that are not UTF-8 in the same words,
``SOURCE is not valid UTF-8 (line N: REASON at byte OFFSET)``, and drops a byte-order mark at the start
(Windows editors write one; kept, it would glue itself to the first word or TSV header).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from attnkit.errors import InputError

BOM = "\ufeff"


def raw_line_of(data: bytes, offset: int) -> int:
    """1-based line number of byte ``offset``."""
    return data.count(b"\n", 0, offset) + 1


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 bytes -> text without a leading byte-order mark. InputError naming ``source``, the line and
    the byte offset of the first byte that is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{source} is not valid UTF-8 (line {raw_line_of(data, exc.start)}: {exc.reason} at byte {exc.start})"
        ) from None
    return text.removeprefix(BOM)


def decode_lines(data: bytes, source: str) -> list[str]:
    """UTF-8 text -> its lines (line breaks removed; an empty line stays an empty string); errors as
    :func:`decode_text`. Lines end at "\\n" only (a "\\r" before it is dropped): other Unicode breaks (form
    feed, U+2028, ...) stay inside the line, so that commands give one output line per input line as
    ``wc -l`` counts them."""
    lines = decode_text(data, source).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [s[:-1] if s.endswith("\r") else s for s in lines]


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, gzip-compressed when its name ends in ``.gz`` (InputError if missing,
    unreadable or not UTF-8)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    return decode_lines(data, str(path))
