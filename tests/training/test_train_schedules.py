"""Learning-rate schedules against their formulas, written independently here."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from attnkit.training import TrainConfig, build_scheduler, noam_peak_lr
from attnkit.training.schedules import Schedule


def _lrs(cfg: TrainConfig, n: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_noam_equals_the_paper_formula() -> None:
    d_model, warmup = 512, 4000
    cfg = TrainConfig(lr=noam_peak_lr(d_model, warmup), warmup=warmup, schedule="noam", max_steps=10000)
    lrs = _lrs(cfg, 9000)
    for n in (1, 10, 3999, 4000, 4001, 8999):  # update n uses lrs[n - 1]
        paper = d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)
        assert lrs[n - 1] == pytest.approx(paper, rel=1e-9)


def test_cosine_warmup_then_cosine_to_min_lr() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup=10, schedule="cosine", max_steps=110)
    lrs = _lrs(cfg, 120)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    for n in (11, 35, 60, 110):
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (n - 10) / 100))
        assert lrs[n - 1] == pytest.approx(expected)
    assert lrs[115] == pytest.approx(0.1)


def test_linear_constant_inverse_sqrt() -> None:
    lin = Schedule("linear", warmup=4, max_steps=14)  # peak at update 4, zero at update 14
    assert [round(lin(s), 6) for s in range(0, 16, 2)] == [0.25, 0.75, 0.9, 0.7, 0.5, 0.3, 0.1, 0.0]
    const = Schedule("constant", warmup=0, max_steps=5)
    assert {const(s) for s in range(10)} == {1.0}
    inv = Schedule("inverse_sqrt", warmup=4, max_steps=0)
    assert inv(15) == pytest.approx(math.sqrt(4 / 16))
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule("triangle", 1, 1)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_decay_to_time_follows_the_clock_to_the_deadline(monkeypatch) -> None:
    from attnkit.training import schedules

    clock = _Clock()
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup=4, schedule="cosine", max_steps=10**6,
                      decay_to="time", time_limit_s=60.0)
    # 10 s trained in an earlier session; this one started at monotonic 100 with 60 s: deadline at 70 s.
    sched = schedules.schedule_from_config(cfg, schedules.Deadline(started=100.0, seconds_before=10.0, limit_s=60.0))
    assert [sched(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # warm-up: steps only
    clock.now = 110.0  # 20 training seconds: warm-up ends here, the decay spans the 50 s to the deadline
    assert sched(4) == pytest.approx(1.0) and sched.decay_start_s == pytest.approx(20.0)
    for t in (0.2, 0.5, 0.9):
        clock.now = 110.0 + 50.0 * t
        assert sched(5) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    clock.now = 500.0
    assert sched(6) == pytest.approx(0.1)  # past the deadline: the floor
    # The step fraction still ends the decay first when --steps comes before the deadline.
    short = schedules.schedule_from_config(
        dataclasses.replace(cfg, max_steps=14), schedules.Deadline(100.0, 0.0, 60.0, decay_start_s=0.0))
    clock.now = 101.0  # 1 s of 60
    assert short(13) == pytest.approx(0.1)  # update 14 = max_steps
    # A resumed session keeps the warm-up end it was given.
    resumed = schedules.schedule_from_config(cfg, schedules.Deadline(100.0, 40.0, 30.0, decay_start_s=20.0))
    clock.now = 100.0  # 40 s trained of a deadline at 70 s, decay from 20 s: progress 0.4
    assert resumed(50) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.4)))


def test_decay_to_time_is_only_for_a_time_budget_and_a_decay() -> None:
    from attnkit.errors import InputError

    with pytest.raises(InputError, match="--decay-to time needs --time-limit"):
        TrainConfig(schedule="cosine", decay_to="time")
    with pytest.raises(InputError, match="needs --schedule cosine or linear, got 'inverse_sqrt'"):
        TrainConfig(schedule="inverse_sqrt", decay_to="time", time_limit_s=5.0)
    with pytest.raises(InputError, match="decay_to must be one of"):
        TrainConfig(decay_to="epochs")
    assert "decay_to" not in TrainConfig().to_dict()  # earlier runs' train_config.json unchanged
    assert TrainConfig(schedule="linear", decay_to="time", time_limit_s=5.0).to_dict()["decay_to"] == "time"
