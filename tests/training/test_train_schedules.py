"""Learning-rate schedules against their formulas, written independently here."""

from __future__ import annotations

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
