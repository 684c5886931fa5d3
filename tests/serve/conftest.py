"""Fixtures of the server tests: the runs (trained once per session), a server on them (started once per
session, stopped by SIGTERM at the end) and the same runs opened in this process, for the answers each
request must get when decoded alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _serve import ServerProcess, train_serve_runs  # tests/serve/_serve.py

from attnkit.tasks.runs import Run, open_run

# The limits of the shared server (small, so that the tests can reach them cheaply).
LIMITS = ["--max-texts", "8", "--max-chars", "400", "--max-new-tokens", "40", "--max-beam", "4",
          "--body-timeout", "1.5", "--max-body-bytes", "65536", "--timeout", "30", "--batch-wait-ms", "30"]


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_serve_runs(tmp_path_factory.mktemp("serve-runs"))


@pytest.fixture(scope="session")
def server(serve_runs: dict[str, Path]) -> Iterator[ServerProcess]:
    proc = ServerProcess(serve_runs, *LIMITS)
    yield proc
    assert proc.stop() == 0, "".join(proc.stderr)[-3000:]


@pytest.fixture(scope="session")
def local(serve_runs: dict[str, Path]) -> dict[str, Run]:
    """The runs opened here: what each request decoded alone gives."""
    return {name: open_run(path) for name, path in serve_runs.items()}
