"""The end of the BERT training commands (``mlm train``, ``classify train``): announce the model on stderr,
train (or resume) it, print one summary line on stdout."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from attnkit.models.params import num_parameters
from attnkit.training import TrainConfig, TrainTask, train


def train_and_summarise(
    task: TrainTask, model: nn.Module, cfg: TrainConfig, run: Path, announce: str, summarise: Callable[[dict], str]
) -> int:
    """Print ``attnkit: {announce}`` to stderr, with ``{params}`` replaced by the parameter count in millions
    (``1.2M``); train ``model`` on ``task`` into ``run``; print ``step N (stop reason)``, followed by
    ``: summarise(final evaluation)`` when the run ended with one. Returns the command's exit code, 0."""
    params = f"{num_parameters(model) / 1e6:.1f}M"
    print("attnkit: " + announce.replace("{params}", params), file=sys.stderr)
    result = train(task, model, cfg, run)
    line = f"step {result.step} ({result.stop_reason})"
    if result.eval:
        line += ": " + summarise(result.eval)
    print(line)
    return 0
