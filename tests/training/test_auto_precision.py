"""--precision auto for training: the faster precision for the model, timed; the run is unchanged by the
probe and a resumed run keeps the choice."""

from __future__ import annotations

import json

import pytest
import torch
from _training_toy import ToyModel, ToyTask

from attnkit.layers.quant import Capabilities
from attnkit.training import TrainConfig, train
from attnkit.training import auto_precision as ap


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=6, lr=3e-2, warmup=2, schedule="inverse_sqrt", device="cpu", log_every=1, ckpt_every=0,
                quiet=True, seed=1)
    return TrainConfig(**{**base, **kw})


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    names = ("avx512_bf16",) if bf16 else ()
    monkeypatch.setattr(ap, "capabilities", lambda device: Capabilities("cpu", bf16, False, names))


class _Clock:
    """A fake clock: each timed step of ``precision`` lasts ``costs[precision]`` seconds."""

    def __init__(self, costs: dict[str, float], first: dict[str, float] | None = None) -> None:
        self.costs, self.now, self.current, self.ending = costs, 0.0, "fp32", False
        self.first = dict(first or {})  # a candidate's first step (kernel creation) lasts this long instead
        self.order: list[str] = []

    def __call__(self) -> float:  # called at the start and at the end of each step, alternately
        if self.ending:
            self.order.append(self.current)
            self.now += self.first.pop(self.current, None) or self.costs[self.current]
        self.ending = not self.ending
        return self.now


def _choose(costs: dict[str, float], monkeypatch: pytest.MonkeyPatch, clock: _Clock | None = None
            ) -> ap.PrecisionChoice:
    _fake_cpu(monkeypatch, bf16=True)
    torch.manual_seed(0)
    model, task = ToyModel(), ToyTask()
    batch = task.batches(0)[0]
    clock = clock or _Clock(costs)

    def step() -> torch.Tensor:
        clock.current = "bf16" if torch.is_autocast_enabled("cpu") else "fp32"
        return task.loss(model, batch)[0]

    return ap.choose_precision(step, model, torch.device("cpu"), clock=clock)


def test_bf16_is_chosen_only_when_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _choose({"fp32": 1.0, "bf16": 0.5}, monkeypatch)
    assert fast.precision == "bf16" and fast.seconds == pytest.approx({"fp32": 1.0, "bf16": 0.5})
    assert "2.00x fp32's step" in fast.reason
    slow = _choose({"fp32": 1.0, "bf16": 1.3}, monkeypatch)  # the nanoGPT char model's case on AMX
    assert slow.precision == "fp32" and "0.77x" in slow.reason
    tie = _choose({"fp32": 1.0, "bf16": 0.97}, monkeypatch)  # under MIN_GAIN: fp32's accuracy wins
    assert tie.precision == "fp32"


def test_warm_ups_are_not_timed_and_the_candidates_alternate(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16's first step (oneDNN creating its kernels) is slow: it must not decide the choice; the rounds
    alternate fp32 and bf16 so a slow moment of the machine falls on both."""
    clock = _Clock({"fp32": 1.0, "bf16": 0.7}, first={"bf16": 9.0})
    choice = _choose({}, monkeypatch, clock)
    assert choice.precision == "bf16" and choice.seconds == pytest.approx({"fp32": 1.0, "bf16": 0.7})
    rounds = ap.WARMUP_ROUNDS + 3
    assert clock.order == ["fp32", "bf16"] * rounds


def test_no_native_bf16_means_fp32_without_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu(monkeypatch, bf16=False)
    calls = []
    choice = ap.choose_precision(lambda: calls.append(1), torch.nn.Linear(2, 2), torch.device("cpu"))
    assert choice.precision == "fp32" and not calls and "no native bf16" in choice.reason


def test_the_probe_leaves_the_run_as_if_started_with_the_choice(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    """Same losses and weights as a run given the chosen precision explicitly (dropout on: the random
    streams are restored); the choice is in train_config.json and run.json; resuming keeps it."""
    _fake_cpu(monkeypatch, bf16=True)
    torch.manual_seed(0)
    auto_model = ToyModel(dropout=0.2)
    auto = train(ToyTask(), auto_model, _cfg(precision="auto", max_steps=3), tmp_path / "auto")
    chosen = json.loads((tmp_path / "auto" / "train_config.json").read_text())["precision"]
    meta = json.loads((tmp_path / "auto" / "run.json").read_text())["precision_auto"]
    assert chosen in ("fp32", "bf16") and meta["chosen"] == chosen and set(meta["step_seconds"]) == {"fp32", "bf16"}
    assert f"--precision auto: {chosen}" in capsys.readouterr().err
    torch.manual_seed(0)
    plain_model = ToyModel(dropout=0.2)
    plain = train(ToyTask(), plain_model, _cfg(precision=chosen, max_steps=3), tmp_path / "plain")
    assert auto.losses == plain.losses
    for a, b in zip(auto_model.parameters(), plain_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # Resume with --precision auto again: no new probe, the first session's precision.
    _fake_cpu(monkeypatch, bf16=False)  # would now pick fp32 if it probed again
    torch.manual_seed(0)
    rest = train(ToyTask(), ToyModel(dropout=0.2), _cfg(precision="auto", max_steps=6), tmp_path / "auto")
    assert rest.resumed_from == 3
    assert json.loads((tmp_path / "auto" / "train_config.json").read_text())["precision"] == chosen


def test_auto_is_a_known_precision_and_others_are_not() -> None:
    assert _cfg(precision="auto").precision == "auto"
    with pytest.raises(Exception, match="precision must be one of"):
        _cfg(precision="fp8")
