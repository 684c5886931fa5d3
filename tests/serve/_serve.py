"""What the server tests share: small runs trained in seconds (a translation run and a character GPT
trained enough that their outputs depend on the input; a byte-BPE GPT, a BERT masked-LM and a classifier
of a few steps) and :class:`ServerProcess`, a real ``attnkit serve`` on 127.0.0.1 (a free port) in a
subprocess that each test module starts and stops itself, within timeouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from _runs import QUIET, _sentences, _train  # noqa: E402  (tests/cli/_runs.py)

from attnkit.data.dates import dates_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def train_serve_runs(tmp: Path) -> dict[str, Path]:
    """{name: run directory} of the five runs, trained under ``tmp``."""
    data = tmp / "parallel"
    data.mkdir()
    c = dates_corpus(60, seed=0)
    (data / "train.words").write_text("".join(s + "\n" for s in c.src))
    (data / "train.iso").write_text("".join(s + "\n" for s in c.tgt))
    runs = {name: tmp / name for name in ("translate", "lm", "lm_bpe", "mlm", "classify")}
    fast = ["--warmup", "10", "--lr", "0.003"]
    _train(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out",
            str(runs["translate"]), "--preset", "tiny", "--vocab-size", "80", "--max-tokens", "256", "--max-len", "32",
            "--steps", "120", "--val-bleu-n", "0", *fast, *QUIET])
    text = tmp / "text.txt"
    text.write_text("".join(s + ".\n" for s in _sentences(60)), encoding="utf-8")
    lm = ["--preset", "tiny", "--block-size", "24", "--batch-size", "4", *QUIET]
    _train(["lm", "train", "--text", str(text), "--out", str(runs["lm"]), "--tokenizer", "char", "--steps", "60",
            *fast, *lm])
    _train(["lm", "train", "--text", str(text), "--out", str(runs["lm_bpe"]), "--tokenizer", "bpe", "--bpe-vocab",
            "300", "--steps", "2", *lm])
    _train(["mlm", "train", "--text", str(text), "--out", str(runs["mlm"]), "--preset", "tiny", "--vocab-size", "50",
            "--max-tokens", "128", "--steps", "2", *QUIET])
    tsv = tmp / "labels.tsv"
    tsv.write_text("".join(f"{'pos' if i % 2 else 'neg'}\t{s}\n" for i, s in enumerate(_sentences(20, 1))))
    _train(["classify", "train", "--data", str(tsv), "--init", str(runs["mlm"]), "--out", str(runs["classify"]),
            "--steps", "2", "--batch-size", "4", "--max-length", "32", *QUIET])
    return runs


class ServerProcess:
    """``attnkit serve`` in a subprocess on 127.0.0.1:<free port>: ``url``, ``client()``, ``stop()``.

    Started with one torch thread and passive OpenMP waiting (the test machine has 2 shared cores)."""

    def __init__(self, runs: dict[str, Path], *flags: str, env: dict[str, str] | None = None,
                 start_timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "attnkit", "serve", *(f"{n}={p}" for n, p in runs.items()), "--host",
               "127.0.0.1", "--port", "0", "--threads", "1", *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                     env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})})
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.url = self._wait_for_url(start_timeout)
        deadline = time.monotonic() + start_timeout
        while True:  # the socket listens before uvicorn accepts: wait for the first answer
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server did not start: {''.join(self.stderr)[-3000:]}")
            time.sleep(0.1)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _wait_for_url(self, timeout: float) -> str:
        found: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if " on http://" in line:
                found.append(line.rsplit(" on ", 1)[1].strip())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            raise RuntimeError(f"server printed no address: {''.join(self.stderr)[-3000:]}")
        return found[0]

    def client(self, timeout: float = 30.0, **kwargs) -> httpx.Client:  # noqa: ANN003
        return httpx.Client(base_url=self.url, timeout=timeout, **kwargs)

    def post(self, path: str, body: dict, **kwargs) -> httpx.Response:  # noqa: ANN003
        return httpx.post(self.url + path, json=body, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=10, headers=self._auth).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(name + "{" + want + "}") or (not labels and line.startswith(name + " ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    _auth: dict[str, str] = {}

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def sse_events(text: str) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a text/event-stream body."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out
