"""The training loop on a tiny task: exact resume, accumulation, precision, NaN, signals, time limit."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from typing import NamedTuple

import pytest
import torch
from _training_toy import ToyModel, ToyTask

from attnkit.errors import AttnkitError, CheckpointError, InputError
from attnkit.training import (
    TrainConfig,
    TrainingDivergedError,
    latest_checkpoint,
    load_model_weights,
    move_to,
    train,
)
from attnkit.training import checkpoint as ck
from attnkit.training.metrics import read_metrics


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=12, lr=3e-2, warmup=3, schedule="cosine", min_lr=1e-3, weight_decay=0.01,
                device="cpu", log_every=1, ckpt_every=0, quiet=True, seed=1)
    return TrainConfig(**{**base, **kw})


def _run(run_dir, task=None, dropout: float = 0.2, **kw):
    torch.manual_seed(0)
    model = ToyModel(dropout=dropout)
    return train(task or ToyTask(), model, _cfg(**kw), run_dir), model


def test_resume_gives_the_same_losses_and_weights(tmp_path) -> None:
    # inverse_sqrt does not depend on max_steps, so --steps 5 then --steps 12 is the same schedule.
    kw = dict(eval_every=4, schedule="inverse_sqrt")
    full, m_full = _run(tmp_path / "full", **kw)
    part, _ = _run(tmp_path / "part", max_steps=5, **kw)  # stops at 5 with a checkpoint
    assert part.step == 5 and latest_checkpoint(tmp_path / "part").name == "step-00000005"
    rest, m_rest = _run(tmp_path / "part", **kw)
    assert rest.resumed_from == 5
    assert part.losses + rest.losses == pytest.approx(full.losses, abs=1e-6, rel=0)
    for a, b in zip(m_full.parameters(), m_rest.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    logged = [r["step"] for r in read_metrics(tmp_path / "part") if r["kind"] == "train"]
    assert logged == list(range(1, 13))  # each step logged once across the two runs
    evals = [r for r in read_metrics(tmp_path / "part") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 5, 8, 12] and all("val_loss" in r for r in evals)


def test_gradient_accumulation_equals_one_big_batch(tmp_path) -> None:
    # Sequences of different lengths: per-micro-batch means would differ from the token-weighted mean.
    big, m_big = _run(tmp_path / "big", ToyTask(batch_size=8), dropout=0.0, max_steps=6)
    acc, m_acc = _run(tmp_path / "acc", ToyTask(batch_size=2), dropout=0.0, max_steps=6, grad_accum=4)
    assert acc.losses == pytest.approx(big.losses, abs=1e-6, rel=0)
    for a, b in zip(m_big.parameters(), m_acc.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_one_step_update_equals_hand_computed_mean_loss_gradient(tmp_path) -> None:
    task = ToyTask(batch_size=2, smoothing=0.0)
    torch.manual_seed(0)
    ref = ToyModel()
    batches = task.batches(0)[:3]
    total = sum(task.loss(ref, b)[0] for b in batches) / sum(task.count(b) for b in batches)
    total.backward()
    sgd = lambda model, cfg: torch.optim.SGD(model.parameters(), lr=cfg.lr)  # noqa: E731
    torch.manual_seed(0)
    model = ToyModel()
    before = [p.detach().clone() for p in model.parameters()]
    train(task, model, _cfg(max_steps=1, grad_accum=3, warmup=0, schedule="constant", lr=0.5, clip_norm=None),
          tmp_path, optimizer_factory=sgd)
    for p0, p1, r in zip(before, model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p0 - 0.5 * r.grad, p1.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_on_cpu_is_finite_and_close_to_fp32(tmp_path, precision: str) -> None:
    ref, _ = _run(tmp_path / "fp32", dropout=0.0, max_steps=6)
    low, _ = _run(tmp_path / precision, dropout=0.0, max_steps=6, precision=precision)
    assert all(torch.isfinite(torch.tensor(low.losses)))
    assert low.losses == pytest.approx(ref.losses, rel=3e-2)
    records = [r for r in read_metrics(tmp_path / precision) if r["kind"] == "train"]
    assert ("loss_scale" in records[-1]) == (precision == "fp16")


def test_nan_loss_names_the_step_and_keeps_last_good_checkpoint(tmp_path) -> None:
    task = ToyTask(nan_at_call=8)  # the 8th loss call is step 8 (one micro-batch per step)
    with pytest.raises(TrainingDivergedError, match="at step 8") as info:
        _run(tmp_path, task, ckpt_every=3)
    assert isinstance(info.value, AttnkitError) and "step-00000006" in str(info.value)
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    load_model_weights(ToyModel(), tmp_path, family="toy")  # intact
    assert all(torch.isfinite(p).all() for p in ToyModel().parameters())


def test_nan_gradient_with_finite_loss_is_caught_before_the_update(tmp_path) -> None:
    with pytest.raises(TrainingDivergedError, match="gradient norm is nan .* at step 5"):
        _run(tmp_path, ToyTask(nan_grad_at_call=5), ckpt_every=4)
    weights = ck.read_weights(latest_checkpoint(tmp_path) / ck.MODEL_FILE)
    assert latest_checkpoint(tmp_path).name == "step-00000004"
    assert all(torch.isfinite(w).all() for w in weights.values())


class _SignalAt(ToyTask):
    def __init__(self, call: int, signum: int):
        super().__init__()
        self.at, self.signum = call, signum

    def loss(self, model, batch):
        if self.calls + 1 == self.at:
            os.kill(os.getpid(), self.signum)
        return super().loss(model, batch)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_step_writes_checkpoint_and_resume_is_exact(tmp_path, signum: int) -> None:
    full, _ = _run(tmp_path / "full")
    before = signal.getsignal(signum)
    stopped, _ = _run(tmp_path / "run", _SignalAt(4, signum), ckpt_every=100)
    assert stopped.stop_reason == "signal" and stopped.step == 4
    assert latest_checkpoint(tmp_path / "run").name == "step-00000004"
    assert signal.getsignal(signum) is before  # handler restored
    rest, _ = _run(tmp_path / "run")
    assert stopped.losses + rest.losses == pytest.approx(full.losses, abs=1e-6, rel=0)


def test_time_limit_stops_with_checkpoint(tmp_path) -> None:
    res, _ = _run(tmp_path, ToyTask(sleep=0.05), time_limit_s=0.01, max_steps=50)
    assert res.stop_reason == "time_limit" and 1 <= res.step < 50
    assert latest_checkpoint(tmp_path).name == f"step-{res.step:08d}"


def test_resuming_a_run_of_another_family_is_refused(tmp_path) -> None:
    _run(tmp_path, max_steps=2)
    other = ToyTask()
    other.family = "gpt"
    with pytest.raises(CheckpointError, match="'toy' model, not 'gpt'"):
        _run(tmp_path, other, max_steps=4)


def test_resume_with_wrong_model_config_is_a_checkpoint_error(tmp_path) -> None:
    _run(tmp_path, max_steps=2)
    with pytest.raises(CheckpointError, match="do not match the model"):
        train(ToyTask(), ToyModel(dim=8), _cfg(max_steps=4), tmp_path)


def test_run_dir_files(tmp_path) -> None:
    _run(tmp_path, max_steps=3)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["family"] == "toy" and run["model_config"] == {"dim": 16}
    assert json.loads((tmp_path / "train_config.json").read_text())["max_steps"] == 3
    rec = read_metrics(tmp_path)[0]
    assert {"step", "loss", "lr", "tokens_per_s", "elapsed_s"} <= set(rec)


@pytest.mark.slow  # torch.compile on CPU takes about a minute here; the prefix logic is tested fast
def test_compiled_training_equals_plain_and_its_checkpoint_loads_both_ways(tmp_path) -> None:
    plain, m_plain = _run(tmp_path / "plain", dropout=0.0, max_steps=4)
    compiled, m_compiled = _run(tmp_path / "compiled", dropout=0.0, max_steps=4, compile=True)
    assert compiled.losses == pytest.approx(plain.losses, abs=1e-5, rel=0)
    model = ToyModel()
    load_model_weights(model, tmp_path / "compiled", family="toy")  # into a plain model
    torch.testing.assert_close(model.out.weight, m_compiled.out.weight, rtol=0, atol=0)
    back = torch.compile(ToyModel())
    load_model_weights(back, tmp_path / "plain", family="toy")  # and a plain checkpoint into a compiled one
    torch.testing.assert_close(back._orig_mod.out.weight, m_plain.out.weight, rtol=0, atol=0)


def test_move_to_handles_nested_batches() -> None:
    @dataclasses.dataclass
    class B:
        x: torch.Tensor
        n: int

    class NT(NamedTuple):
        a: torch.Tensor
        b: list

    batch = {"d": B(torch.ones(2), 3), "t": NT(torch.zeros(1), [torch.ones(1), "s"])}
    moved = move_to(batch, torch.device("meta"))
    assert moved["d"].x.is_meta and moved["d"].n == 3 and isinstance(moved["t"], NT)
    assert moved["t"].a.is_meta and moved["t"].b[0].is_meta and moved["t"].b[1] == "s"


def test_run_dir_that_is_a_file_is_an_input_error(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        _run(tmp_path / "f", max_steps=1)


def test_decay_to_time_ends_the_cosine_at_the_time_limit(tmp_path) -> None:
    kw = dict(max_steps=10**6, warmup=2, schedule="cosine", min_lr=0.0, decay_to="time", ckpt_every=5)
    first, _ = _run(tmp_path, ToyTask(sleep=0.02), time_limit_s=0.6, **kw)
    assert first.stop_reason == "time_limit" and first.step > 8
    lrs = [r["lr"] for r in read_metrics(tmp_path) if r["kind"] == "train"]
    peak = _cfg().lr
    assert lrs[2] == pytest.approx(peak)  # the first update after warm-up: progress 0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))  # decaying
    assert lrs[-1] < 0.1 * peak  # the deadline reached (a step-based cosine over 10**6 steps: ~peak)
    state = ck.load_training_state(latest_checkpoint(tmp_path), map_location="cpu")
    assert 0 < state["decay_start_s"] < state["elapsed_s"]
    # Resumed with more time: the decay restarts from where it was, not from the peak, and ends at the new limit.
    rest, _ = _run(tmp_path, ToyTask(sleep=0.02), time_limit_s=0.6, **kw)
    assert rest.resumed_from == first.step
    lrs = [r["lr"] for r in read_metrics(tmp_path) if r["kind"] == "train" and r["step"] > first.step]
    assert lrs[0] < 0.9 * peak and lrs[-1] < 0.1 * peak
