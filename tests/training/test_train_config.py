"""The common training flags and the TrainConfig they build."""

from __future__ import annotations

import argparse

import pytest

from attnkit.errors import InputError
from attnkit.training import TrainConfig, add_train_args, train_config_from_args


def _parse(argv: list[str], defaults: TrainConfig | None = None) -> TrainConfig:
    p = argparse.ArgumentParser()
    add_train_args(p, defaults)
    return train_config_from_args(p.parse_args(argv))


def test_flags_fill_config_and_json_round_trips(tmp_path) -> None:
    cfg = _parse(["--steps", "7", "--lr", "0.5", "--schedule", "cosine", "--min-lr", "0.1", "--grad-accum", "3",
                  "--precision", "bf16", "--device", "cpu", "--compile", "--keep", "2", "--clip", "none",
                  "--betas", "0.8", "0.9", "--time-limit", "30", "--quiet"])
    assert (cfg.max_steps, cfg.lr, cfg.schedule, cfg.grad_accum, cfg.precision) == (7, 0.5, "cosine", 3, "bf16")
    assert cfg.compile and cfg.quiet and cfg.clip_norm is None and cfg.betas == (0.8, 0.9) and cfg.keep_last == 2
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg


def test_family_defaults_are_used() -> None:
    cfg = _parse([], TrainConfig(lr=7e-4, warmup=4000, schedule="noam", max_steps=3))
    assert (cfg.lr, cfg.warmup, cfg.schedule, cfg.max_steps) == (7e-4, 4000, "noam", 3)


@pytest.mark.parametrize("argv, word", [(["--lr", "-1"], "lr"), (["--grad-accum", "0"], "grad_accum"),
                                        (["--keep", "0"], "keep"), (["--min-lr", "5"], "min_lr")])
def test_bad_values_raise_input_error(argv: list[str], word: str) -> None:
    with pytest.raises(InputError, match=word):
        _parse(argv)
