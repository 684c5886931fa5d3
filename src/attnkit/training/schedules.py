"""Learning-rate schedules: linear warm-up, then a decay shape.  Each is a multiplier of the peak ``lr``.

All schedules are objects with ``__call__(step) -> float`` so that they can be given to
``torch.optim.lr_scheduler.LambdaLR`` (whose ``step`` argument starts at 0: update number ``step + 1``
uses multiplier ``f(step)``), and whose state (plain numbers) is saved with the scheduler.

* ``noam`` (Vaswani et al. 2017, eq. 3): ``lr * min(n^-0.5, n * warmup^-1.5) * warmup^0.5``, i.e. linear
  warm-up to ``lr`` then decay as ``1/sqrt(n)``.  The paper's own constants correspond to the peak
  ``lr = d_model^-0.5 * warmup^-0.5`` (see :func:`noam_peak_lr`).
* ``inverse_sqrt`` (fairseq's name for the same shape).
* ``cosine``: cosine from ``lr`` at the end of warm-up to ``min_lr`` at ``max_steps``.
* ``linear``: linear from ``lr`` to ``min_lr`` at ``max_steps`` (BERT's schedule).
* ``constant``: ``lr`` after warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attnkit.training.config import SCHEDULES, TrainConfig


def noam_peak_lr(d_model: int, warmup: int, factor: float = 1.0) -> float:
    """Peak learning rate of the paper's schedule: ``factor * d_model^-0.5 * warmup^-0.5``."""
    return factor * d_model**-0.5 * max(warmup, 1) ** -0.5


@dataclass
class Schedule:
    """``step`` (0-based, as given by LambdaLR) -> multiplier of the peak learning rate."""

    kind: str
    warmup: int
    max_steps: int
    min_ratio: float = 0.0  # min_lr / lr

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; expected one of {SCHEDULES}")

    def __call__(self, step: int) -> float:
        n = step + 1  # the number of the update about to be taken (1-based, as in the paper)
        w = self.warmup
        if w > 0 and n <= w and self.kind != "noam":
            return n / w
        if self.kind in ("noam", "inverse_sqrt"):
            w = max(w, 1)
            return min(n**-0.5, n * w**-1.5) * w**0.5
        if self.kind == "constant":
            return 1.0
        span = max(self.max_steps - w, 1)
        progress = min(max(n - w, 0) / span, 1.0)
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:  # linear
            shape = 1.0 - progress
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def schedule_from_config(cfg: TrainConfig) -> Schedule:
    return Schedule(cfg.schedule, cfg.warmup, cfg.max_steps, cfg.min_lr / cfg.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, last_step: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following ``cfg.schedule``; call ``.step()`` once after each optimizer update.

    ``last_step`` > 0 (resuming after that many updates) needs ``initial_lr`` in every param group.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_from_config(cfg), last_epoch=last_step - 1)
