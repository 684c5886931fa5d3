"""`--shard` (FSDP2) under torchrun with 2 CPU processes (gloo) on a Llama-style GPT: the losses of one process
over the same global batch, exact resume (sharded, and a sharded checkpoint resumed in one process), and
checkpoints in the unsharded run-directory format (consolidated weights, index-keyed optimizer state)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.cli.main import main
from attnkit.tasks.runs import open_run
from attnkit.training import latest_checkpoint
from attnkit.training.checkpoint import load_training_state, read_weights
from attnkit.training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["--preset", "llama-tiny", "--block-size", "16", "--d-model", "32", "--n-layers", "2", "--batch-size", "2",
         "--eval-every", "3", "--ckpt-every", "3", "--log-every", "1", "--quiet", "--seed", "1", "--threads", "1",
         "--lr", "3e-3", "--warmup", "2"]


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "speaks", "to", "all", "and", "none", "hear"]
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("".join(" ".join(rng.choice(words, 6)) + ".\n" for _ in range(150)), encoding="utf-8")
    return path


def _torchrun(out: Path, text: Path, steps: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "attnkit",
           "lm", "train", "--text", str(text), "--out", str(out), "--steps", str(steps), "--shard", *TRAIN]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _losses(run: Path) -> list[float]:
    records = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return [r["loss"] for r in records]


def _evals(run: Path) -> list[float]:
    return [r["val_loss"] for r in read_metrics(run) if r["kind"] == "eval"]


def test_two_sharded_processes_equal_one_and_resume_exactly(text: Path, tmp_path: Path) -> None:
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    resumed, single = tmp_path / "resumed", tmp_path / "single"
    assert main(["lm", "train", "--text", str(text), "--out", str(one), "--steps", "6", "--grad-accum", "2",
                 *TRAIN]) == 0
    _torchrun(sharded, text, 6)
    assert _losses(sharded) == pytest.approx(_losses(one), abs=1e-5, rel=0)
    assert _evals(sharded) == pytest.approx(_evals(one), abs=1e-5, rel=0)  # every process evaluates, one logs
    assert _losses(one)[-1] < _losses(one)[0]

    # The checkpoint is the unsharded format: full weights (tied ones stored once), optimizer state by index.
    ckpt, ref = latest_checkpoint(sharded), latest_checkpoint(one)
    assert ckpt.name == ref.name == "step-00000006"
    w, w_ref = read_weights(ckpt / "model.safetensors"), read_weights(ref / "model.safetensors")
    assert set(w) == set(w_ref)
    for k in w:
        torch.testing.assert_close(w[k], w_ref[k], atol=1e-5, rtol=0)
    state, state_ref = load_training_state(ckpt), load_training_state(ref)
    assert sorted(state["optimizer"]["state"]) == sorted(state_ref["optimizer"]["state"])
    assert [g["params"] for g in state["optimizer"]["param_groups"]] == [
        g["params"] for g in state_ref["optimizer"]["param_groups"]]
    run = open_run(sharded)  # inference from the consolidated weights
    assert run.generate("the king", max_new_tokens=5, temperature=0.0) == open_run(one).generate(
        "the king", max_new_tokens=5, temperature=0.0)

    # Resume from step 3 (the later checkpoint removed, as if the run had been stopped there): sharded on 2
    # processes it repeats the steps exactly; in one process it gives the one-process losses.
    for copy in (resumed, single):
        shutil.copytree(sharded, copy)
        shutil.rmtree(copy / "checkpoints" / "step-00000006")
    _torchrun(resumed, text, 6)
    assert _losses(resumed) == pytest.approx(_losses(sharded), abs=1e-6, rel=0)
    assert main(["lm", "train", "--text", str(text), "--out", str(single), "--steps", "6", "--grad-accum", "2",
                 *TRAIN]) == 0
    assert _losses(single) == pytest.approx(_losses(one), abs=1e-5, rel=0)
