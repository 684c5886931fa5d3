"""Incremental detokenization: the text of a growing token sequence, piece by piece, as it becomes final.

Streaming generation prints each token as it is produced, but one token is not always whole text: a
byte-level BPE token may hold part of a UTF-8 character (decoded alone it gives U+FFFD), and decoders may
treat the first token of a sequence differently (SentencePiece drops the space that starts it). So a
:class:`TextStream` decodes a short window of recent tokens, not each token alone: the window starts one
token before the text already given out, and a piece is the window's text beyond that, minus a trailing
run of U+FFFD that the next tokens may still turn into a character. The pieces joined are
``decode(all tokens)`` (tested against it on random token sequences of every tokenizer kind).
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"
# A UTF-8 character is at most 4 bytes, so at most 4 replacement characters at the end can still merge
# into one; a longer run's earlier ones are final (this bounds the window on invalid byte runs).
_MAX_PENDING = 4
# A window longer than this (a long run of invalid bytes, which never ends in a whole character) moves on
# to its last _KEEP tokens when their text is the end of the window's text, so a push stays cheap.
_MAX_WINDOW, _KEEP = 32, 8


class TextStream:
    """Feed token ids with :meth:`push`; each call returns the text that became final ("" if none yet);
    :meth:`flush` returns the rest (the sequence has ended). ``decode``: the tokenizer's ids -> text."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.window: list[int] = []  # the last token already given out, then the tokens not yet given out
        self.given = 0  # characters of decode(window) already given out
        self.finished = False  # set by the caller once the row has ended

    def push(self, token: int) -> str:
        self.window.append(token)
        text = self.decode(self.window)
        final = len(text) - _trailing_replacements(text)
        if len(text) - final > _MAX_PENDING:
            final = len(text) - _MAX_PENDING
        if final <= self.given:
            return ""
        piece = text[self.given : final]
        self.given = final
        if final == len(text):  # all of the window is out: keep only its last token as context
            self.window = self.window[-1:]
            self.given = len(self.decode(self.window))
        elif len(self.window) > _MAX_WINDOW:
            self._shorten(text)
        return piece

    def _shorten(self, text: str) -> None:
        tail = self.window[-_KEEP:]
        tail_text = self.decode(tail)
        pending = len(text) - self.given  # characters of the window not given out yet
        if text.endswith(tail_text) and len(tail_text) >= pending:
            self.window, self.given = tail, len(tail_text) - pending

    def flush(self) -> str:
        """The text not given out yet, replacement characters included (nothing can complete them now)."""
        piece = self.decode(self.window)[self.given :] if self.window else ""
        self.window = self.window[-1:]
        self.given = len(self.decode(self.window)) if self.window else 0
        return piece


def _trailing_replacements(text: str) -> int:
    return len(text) - len(text.rstrip(REPLACEMENT))
