"""Real processes: 2-process DDP (torchrun, gloo) equals one process; SIGTERM and kill -9 then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _training_toy import main as toy_main

from attnkit.training import latest_checkpoint
from attnkit.training.metrics import read_metrics

TOY = Path(__file__).with_name("_training_toy.py")
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def _losses(run: Path, rank: int = 0) -> list[float]:
    return json.loads((run / f"losses-{rank}.json").read_text())["losses"]


def _train_losses(run: Path) -> list[float]:
    records = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return [r["loss"] for r in records]


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(TOY),
           str(tmp_path / "ddp"), "--steps", "6", "--batch-size", "2", "--ckpt-every", "3"]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    toy_main([str(tmp_path / "one"), "--steps", "6", "--batch-size", "2", "--grad-accum", "2"])
    toy_main([str(tmp_path / "big"), "--steps", "6", "--batch-size", "4"])
    one = _losses(tmp_path / "one")
    assert _losses(tmp_path / "ddp", 0) == pytest.approx(one, abs=1e-5, rel=0)
    assert _losses(tmp_path / "ddp", 1) == _losses(tmp_path / "ddp", 0)  # every rank sees the global loss
    assert _losses(tmp_path / "big") == pytest.approx(one, abs=1e-5, rel=0)
    assert len(_train_losses(tmp_path / "ddp")) == 6  # only rank 0 writes metrics
    assert latest_checkpoint(tmp_path / "ddp").name == "step-00000006"


def _start(run: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(TOY), str(run), "--steps", "40", "--ckpt-every", "3", "--dropout", "0.2",
           "--sleep", "0.15", *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, run: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while latest_checkpoint(run) is None:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def test_sigterm_to_a_training_process_writes_a_checkpoint_and_exits_cleanly(tmp_path) -> None:
    run = tmp_path / "run"
    proc = _start(run)
    _wait_for_checkpoint(proc, run)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads((run / "losses-0.json").read_text())
    assert result["stop_reason"] == "signal" and 3 <= result["step"] < 40
    assert latest_checkpoint(run).name == f"step-{result['step']:08d}"


def test_kill_9_loses_only_steps_after_the_last_checkpoint_and_resume_is_exact(tmp_path) -> None:
    run = tmp_path / "run"
    proc = _start(run)
    _wait_for_checkpoint(proc, run)
    time.sleep(0.2)  # most likely in the middle of a later step
    proc.kill()
    proc.wait(timeout=30)
    saved = int(latest_checkpoint(run).name.split("-")[1])
    assert 3 <= saved < 12
    toy_main([str(run), "--steps", "12", "--ckpt-every", "3", "--dropout", "0.2"])  # resumes
    assert json.loads((run / "losses-0.json").read_text())["step"] == 12
    toy_main([str(tmp_path / "ref"), "--steps", "12", "--ckpt-every", "3", "--dropout", "0.2"])
    assert _train_losses(run) == pytest.approx(_train_losses(tmp_path / "ref"), abs=1e-6, rel=0)
