"""Try every bad input of the shared training infrastructure and print what the user gets (markdown rows).

    .venv/bin/python bench/training_bad_inputs.py     # regenerates the training rows of docs/bad-input.md

Each case runs the library call a training command makes; the CLI prints an AttnkitError as one line
``attnkit: error: <message>`` and exits 2.  Paths are shown relative to a temporary run directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "training"))
from _training_toy import ToyModel, ToyTask  # noqa: E402

from attnkit.errors import AttnkitError  # noqa: E402
from attnkit.training import (  # noqa: E402
    TrainConfig,
    add_train_args,
    load_model_weights,
    train,
    train_config_from_args,
)
from attnkit.training import checkpoint as ck  # noqa: E402


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"max_steps": 3, "lr": 1e-2, "device": "cpu", "quiet": True, "ckpt_every": 1, **kw})


def _trained(run: Path) -> Path:
    torch.manual_seed(0)
    train(ToyTask(), ToyModel(), _cfg(), run)
    return ck.latest_checkpoint(run)


def _flags(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    add_train_args(p)
    train_config_from_args(p.parse_args(argv))


def cases(root: Path) -> list[tuple[str, Callable[[], object]]]:
    def truncated() -> None:
        c = _trained(root / "a")
        f = c / ck.MODEL_FILE
        f.write_bytes(f.read_bytes()[:100])
        load_model_weights(ToyModel(), root / "a", family="toy")

    def flipped() -> None:
        c = _trained(root / "b")
        f = c / ck.MODEL_FILE
        data = bytearray(f.read_bytes())
        data[-1] ^= 0xFF
        f.write_bytes(bytes(data))
        load_model_weights(ToyModel(), c, family="toy")

    def bad_state() -> None:
        c = _trained(root / "c")
        (c / ck.STATE_FILE).write_bytes(b"garbage")
        train(ToyTask(), ToyModel(), _cfg(max_steps=5), root / "c")

    def bad_meta() -> None:
        c = _trained(root / "d")
        (c / ck.META_FILE).write_text("{")
        load_model_weights(ToyModel(), c, family="toy")

    def nan_task() -> None:
        train(ToyTask(nan_at_call=3), ToyModel(), _cfg(max_steps=5), root / "n")

    def nan_grad_task() -> None:
        train(ToyTask(nan_grad_at_call=3), ToyModel(), _cfg(max_steps=5), root / "ng")

    def other_family_resume() -> None:
        _trained(root / "f")
        task = ToyTask()
        task.family = "gpt"
        train(task, ToyModel(), _cfg(max_steps=5), root / "f")

    def empty_data() -> None:
        task = ToyTask()
        task.seqs = []
        train(task, ToyModel(), _cfg(), root / "e")

    def no_checkpoint() -> None:
        (root / "empty").mkdir()
        load_model_weights(ToyModel(), root / "empty")

    def wrong_config() -> None:
        load_model_weights(ToyModel(dim=8), _trained(root / "h"))

    return [
        ("`--lr -1` (any out-of-range training flag)", lambda: _flags(["--lr", "-1"])),
        ("`--grad-accum 0`", lambda: _flags(["--grad-accum", "0"])),
        ("`--device cuda` on a machine without GPU", lambda: train(ToyTask(), ToyModel(), _cfg(device="cuda"), root)),
        ("`--device tpu`", lambda: train(ToyTask(), ToyModel(), _cfg(device="tpu"), root)),
        ("run dir / checkpoint path that does not exist", lambda: load_model_weights(ToyModel(), root / "nope")),
        ("run dir without checkpoints", no_checkpoint),
        ("truncated model.safetensors", truncated),
        ("one flipped byte in model.safetensors", flipped),
        ("corrupt state.pt when resuming", bad_state),
        ("corrupt meta.json", bad_meta),
        ("checkpoint of another model family", lambda: load_model_weights(ToyModel(), _trained(root / "g"), "bert")),
        ("resuming a run dir of another family", other_family_resume),
        ("model config that does not match the weights", wrong_config),
        ("loss becomes NaN/inf during training", nan_task),
        ("gradient becomes NaN/inf while the loss is finite (fp32/bf16)", nan_grad_task),
        ("training data with no examples", empty_data),
    ]


def main() -> None:
    print("| bad input | what the user gets |\n| --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, fn in cases(root):
            try:
                fn()
                got = "**no error** (bug)"
            except AttnkitError as exc:
                got = f"`{type(exc).__name__}`: {str(exc).replace(tmp, 'RUN')}"
            except Exception as exc:  # anything else is a bug: show it
                got = f"**{type(exc).__name__}** (not an AttnkitError): {exc}"
            print(f"| {name} | {got.replace('|', '/')} |")


if __name__ == "__main__":
    main()
