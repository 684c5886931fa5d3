"""Output that streams and stops cleanly (issue 15), for the commands that write as they go (``translate
run``, ``embed``, ``lm sample``).

* :class:`Interruptible`: SIGINT (Ctrl-C) and SIGTERM stop the command with :class:`Stopped`, which
  ``main`` prints as one line, ``attnkit: interrupted after 412 of 2000 lines``, exiting with 130 / 143
  (128 + the signal). A signal that arrives while output is being written waits until the write and its
  flush are done (:meth:`Interruptible.writing`), so what was written is whole lines.
* :func:`progress_bar`: tqdm on stderr, shown only when stderr is a terminal, without ``--quiet``, and
  once the work has taken a few seconds.
* :class:`SampleWriter`: the samples of ``lm sample`` printed one after another as they are generated
  (the later ones wait in memory while the first is printed), exactly the text printed at the end before.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

# The progress bar appears once the work has run this long (short runs print nothing on stderr).
PROGRESS_DELAY_S = 3.0


class Stopped(Exception):  # noqa: N818 (not an error: the user asked for it)
    """The command was stopped by ``signum``; ``progress`` says how far it got ("412 of 2000 lines")."""

    def __init__(self, signum: int, progress: str) -> None:
        super().__init__(f"interrupted after {progress}")
        self.signum, self.progress = signum, progress

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Interruptible:
    """Within the block, SIGINT and SIGTERM raise :class:`Stopped` (with ``progress()``), except during
    :meth:`writing` blocks, which finish first. The previous handlers come back at the end."""

    def __init__(self, progress: Callable[[], str]) -> None:
        self.progress = progress
        self._writing = 0
        self._pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interruptible:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self._writing:
            self._pending = signum
            return
        raise Stopped(signum, self.progress())

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A block that a signal does not cut (writing and flushing whole lines)."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
        if not self._writing and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Stopped(signum, self.progress())


def progress_bar(total: int, unit: str, quiet: bool) -> tqdm:
    """A tqdm bar on stderr for ``total`` ``unit``s (e.g. lines): off when stderr is not a terminal or with
    ``--quiet``, and shown only after :data:`PROGRESS_DELAY_S` seconds."""
    return tqdm(total=total, unit=unit, disable=quiet or not sys.stderr.isatty(), delay=PROGRESS_DELAY_S,
                leave=False, dynamic_ncols=True, file=sys.stderr)


class LineWriter:
    """Writes whole lines and flushes them at once, counting them for the progress bar and for the
    message of an interruption ("412 of 2000 lines")."""

    def __init__(self, out: TextIO, total: int, guard: Interruptible, bar: tqdm | None = None) -> None:
        self.out, self.total, self.guard, self.bar = out, total, guard, bar
        self.written = 0

    def write(self, lines: list[str]) -> None:
        with self.guard.writing():
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()
            self.written += len(lines)
        if self.bar is not None:
            self.bar.update(len(lines))

    def write_binary(self, data: bytes, rows: int) -> None:
        """``rows`` rows of binary output (``embed --format npy``) to the byte stream under ``out``."""
        with self.guard.writing():
            self.out.buffer.write(data)
            self.out.buffer.flush()
            self.written += rows
        if self.bar is not None:
            self.bar.update(rows)

    def progress(self) -> str:
        return f"{self.written} of {self.total} lines"


class SampleWriter:
    """Prints the samples of ``lm sample`` in order, each as its text is generated: ``prefix`` (the prompt)
    then the pieces, a newline at its end, and the separator line between samples. Samples generated
    alongside the one being printed wait in memory until their turn."""

    SEPARATOR = "\n---------------\n"

    def __init__(self, out: TextIO, prefix: str, count: int, guard: Interruptible) -> None:
        self.out, self.prefix, self.count, self.guard = out, prefix, count, guard
        self.current = 0  # the sample being printed
        self.waiting: dict[int, list[str]] = {}  # pieces not printed yet, by sample
        self.ended: set[int] = set()
        self.line_open = False  # the current sample's text is on the screen, without its final newline

    def __call__(self, sample: int, piece: str, finished: bool) -> None:
        """A TextCallback (see :func:`attnkit.decoding.generate.stream_text`)."""
        self.waiting.setdefault(sample, []).append(piece)
        if finished:
            self.ended.add(sample)
        while self.current < self.count:
            pieces = self.waiting.pop(self.current, None)
            if pieces is not None:
                self._write(("" if self.line_open else self._start()) + "".join(pieces))
                self.line_open = True
            if self.current not in self.ended:
                return
            self._write("\n")
            self.line_open = False
            self.current += 1

    def _start(self) -> str:
        return (self.SEPARATOR if self.current else "") + self.prefix

    def _write(self, text: str) -> None:
        with self.guard.writing():
            self.out.write(text)
            self.out.flush()

    def close_line(self) -> None:
        """On an interruption: end the sample line being printed, so the output ends with a whole line."""
        if self.line_open:
            self.line_open = False
            self._write("\n")

    def progress(self) -> str:
        return f"{self.current} of {self.count} samples"
