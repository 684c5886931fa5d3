"""A fork server for the bounded-resources tests (tests/cli/test_bounded.py) and bench/cli_bad_inputs.py:
it imports attnkit once, then runs each job in a forked child, a real process with its own file
descriptors and signals, under an address-space limit (RLIMIT_AS) and a time limit, at the cost of a fork
instead of a Python start-up with torch (seconds on a busy 2-core machine).

Protocol: one JSON object per line on the server's stdin, one JSON line answering it on its stdout.

* ``{"argv": [...], "stdin": PATH, "out": PATH, "err": PATH, "memory": BYTES, "timeout": SECONDS}``: run
  ``attnkit argv`` and answer ``{"status": exit code or -signal, "timed_out": bool, "seconds": float}``. A
  job still running at its timeout gets SIGTERM (a streaming command then exits 143 with its one line),
  and SIGKILL 10 s later.
* The same with ``"detach": true``: answer ``{"pid": PID}`` at once (``out`` may be a FIFO the caller
  reads); then ``{"wait": PID, "timeout": SECONDS}`` answers as above.
* ``{"ping": true}``: answers ``{"ready": true}`` once the imports are done.

Run with OMP_NUM_THREADS=1: no torch operation runs before the forks (OpenMP's thread pool does not survive
a fork), and the children share two cores with the rest of the machine.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

if __name__ == "__main__":
    from attnkit.cli.main import build_parser, main
    from attnkit.tasks.runs import run_families

    build_parser()  # imports every command module once (main() imports them at each call)
    run_families()  # and every family's task module


def _child(job: dict) -> None:
    """In the forked child: the limit, the job's stdin / stdout / stderr, ``attnkit argv``, exit."""
    resource.setrlimit(resource.RLIMIT_AS, (job["memory"], job["memory"]))
    for fd, path, flags in ((0, job["stdin"], os.O_RDONLY), (1, job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        f = os.open(path, flags, 0o644)
        os.dup2(f, fd)
        os.close(f)
    # Fresh streams over the new descriptors (the server's may hold buffered bytes of the job pipe).
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


def _wait(pid: int, timeout: float) -> dict:
    start, timed_out, killed_at = time.monotonic(), False, None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"status": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
                    "seconds": time.monotonic() - start}
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
        if "ping" in job:
            answer = {"ready": True}
        elif "wait" in job:
            answer = _wait(job["wait"], job["timeout"])
        else:
            pid = os.fork()
            if pid == 0:
                _child(job)
            answer = {"pid": pid} if job.get("detach") else _wait(pid, job["timeout"])
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


class Zygote:
    """The client: starts the server (``env``: its environment) and sends it jobs."""

    def __init__(self, tmp: Path, env: dict[str, str], memory: int = 4 << 30) -> None:
        self.tmp, self.memory, self.jobs = tmp, memory, 0
        self.last_seconds = 0.0  # how long the last run() took in its process
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env)
        self._ask({"ping": True})  # once attnkit is imported (the first job's time is its own)

    def _ask(self, job: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def _job(self, argv: list[str], stdin: bytes, out: Path | None) -> dict:
        self.jobs += 1
        paths = {k: self.tmp / f"job{self.jobs}.{k}" for k in ("stdin", "out", "err")}
        if out is not None:
            paths["out"] = out
        paths["stdin"].write_bytes(stdin)
        return {"argv": argv, "memory": self.memory, **{k: str(p) for k, p in paths.items()}}

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 30.0) -> tuple[int, bytes, str, bool]:
        """``attnkit argv`` with ``stdin``: (exit code or -signal, stdout, stderr, stopped at the timeout)."""
        job = self._job(argv, stdin, None)
        answer = self._ask({**job, "timeout": timeout})
        self.last_seconds = answer["seconds"]
        err = Path(job["err"]).read_bytes().decode("utf-8", "replace")
        return answer["status"], Path(job["out"]).read_bytes(), err, answer["timed_out"]

    def start(self, argv: list[str], stdin: bytes, out: Path) -> tuple[int, Path]:
        """Start ``attnkit argv`` writing to ``out`` (a FIFO to read as it goes); (its pid, its stderr file)."""
        job = self._job(argv, stdin, out)
        return self._ask({**job, "detach": True})["pid"], Path(job["err"])

    def wait(self, pid: int, timeout: float = 120.0) -> int:
        """The exit code (or -signal) of a started job."""
        return self._ask({"wait": pid, "timeout": timeout})["status"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    serve()
