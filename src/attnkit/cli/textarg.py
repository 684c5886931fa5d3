"""``utf8_text``: the argparse type of every option that takes user text (``--prompt``, ``--query``,
``--text``, ``--target``).

On Linux, command-line bytes that are not UTF-8 reach Python as lone surrogates (``surrogateescape``);
the Rust tokenizers raise TypeError on such a string. This type turns it into argparse's one-line error
(exit 2) instead: ``argument --prompt: not valid UTF-8 text (undecodable byte 0xff at character 3)``.
"""

from __future__ import annotations

import argparse


def utf8_text(value: str) -> str:
    """``value`` unchanged if it is Unicode text; ArgumentTypeError naming the first undecodable byte."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(value[exc.start]) - 0xDC00 if 0xDC80 <= ord(value[exc.start]) <= 0xDCFF else None
        what = f"undecodable byte 0x{byte:02x}" if byte is not None else "a lone surrogate"
        raise argparse.ArgumentTypeError(f"not valid UTF-8 text ({what} at character {exc.start})") from None
    return value
