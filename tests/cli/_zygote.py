"""A fork server for the bounded-resources tests (tests/cli/test_bounded.py): imports attnkit once, then runs
each job in a forked child, a real process with real file descriptors and signals, under an address-space
limit (RLIMIT_AS) and a time limit, at the cost of a fork instead of a Python start-up with torch.

Protocol: one JSON object per line on stdin, ``{"argv": [...], "stdin": PATH, "out": PATH, "err": PATH,
"memory": BYTES, "timeout": SECONDS}``; one JSON line per job on stdout, ``{"status": exit code or -signal,
"timed_out": bool, "seconds": float}``. A job still running at its timeout gets SIGTERM (a streaming
command then exits 143 with its one message line), and SIGKILL 10 s later.

Run with OMP_NUM_THREADS=1: no torch operation runs before the forks (OpenMP's thread pool does not
survive a fork), and the children share two cores with the rest of the machine.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
import time
import traceback

from attnkit.cli.main import main  # the heavy imports, once


def _child(job: dict) -> None:
    """In the forked child: the limit, the job's stdin / stdout / stderr, ``attnkit argv``, exit."""
    resource.setrlimit(resource.RLIMIT_AS, (job["memory"], job["memory"]))
    for fd, path, flags in ((0, job["stdin"], os.O_RDONLY), (1, job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        f = os.open(path, flags, 0o644)
        os.dup2(f, fd)
        os.close(f)
    # Fresh streams over the new descriptors (the parent's may hold buffered bytes of the job pipe).
    sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        code = main(job["argv"])
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 (a traceback is what the tests look for)
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(int(code or 0))


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """(exit code or -signal, whether the job ran past ``timeout`` and was stopped)."""
    start, timed_out, killed_at = time.monotonic(), False, None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), timed_out
        now = time.monotonic()
        if not timed_out and now - start > timeout:
            os.kill(pid, signal.SIGTERM)
            timed_out, killed_at = True, now
        elif killed_at is not None and now - killed_at > 10:
            os.kill(pid, signal.SIGKILL)
            killed_at = None
        time.sleep(0.01)


def serve() -> None:
    jobs = os.fdopen(os.dup(0), "rb", buffering=0)
    answers = os.fdopen(os.dup(1), "w")
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = jobs.read(65536)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        job = json.loads(line)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(job)
        status, timed_out = _wait(pid, job["timeout"])
        answers.write(json.dumps({"status": status, "timed_out": timed_out,
                                  "seconds": time.monotonic() - started}) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
