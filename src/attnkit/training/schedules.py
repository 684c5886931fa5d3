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

``--decay-to time`` (``TrainConfig.decay_to``) ends a cosine / linear decay at the run's deadline instead:
when the budget is wall-clock (``--time-limit``), the number of steps it buys is not known in advance, so the
decay's progress is the larger of the step fraction and the fraction of the training time between the end
of warm-up and the deadline (seconds counted across resumed sessions; the deadline is the end of this
session's ``--time-limit``).  The learning rate then depends on the clock, so two such runs are not
identical step for step (a step-based schedule is; resuming keeps the data order and random streams either way).
"""

from __future__ import annotations

import math
import time
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
    # --decay-to time (plain numbers, saved with the scheduler's state).  Training seconds so far are
    # ``time.monotonic() - clock_offset``; the decay ends at ``deadline_s`` of them and starts where warm-up
    # ended (``decay_start_s``, measured on the first call past warm-up unless given by a resumed run).
    deadline_s: float | None = None
    clock_offset: float = 0.0
    decay_start_s: float | None = None

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
        if self.deadline_s is not None:
            progress = max(progress, self.time_progress())
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:  # linear
            shape = 1.0 - progress
        return self.min_ratio + (1.0 - self.min_ratio) * shape


    def seconds(self) -> float:
        """Training seconds so far (--decay-to time)."""
        return time.monotonic() - self.clock_offset

    def time_progress(self) -> float:
        """Fraction in [0, 1] of the training time from the end of warm-up to the deadline."""
        assert self.deadline_s is not None
        now = self.seconds()
        if self.decay_start_s is None:
            self.decay_start_s = now
        span = self.deadline_s - self.decay_start_s
        return 1.0 if span <= 0 else min(max((now - self.decay_start_s) / span, 0.0), 1.0)


@dataclass(frozen=True)
class Deadline:
    """Where a wall-clock budget ends, for ``--decay-to time``: ``seconds_before`` of training in earlier
    sessions, this session's ``limit_s`` counted from ``started`` (``time.monotonic()``), ``decay_start_s``
    as saved by an earlier session (None: not reached yet)."""

    started: float
    seconds_before: float
    limit_s: float
    decay_start_s: float | None = None


def schedule_from_config(cfg: TrainConfig, deadline: Deadline | None = None) -> Schedule:
    sched = Schedule(cfg.schedule, cfg.warmup, cfg.max_steps, cfg.min_lr / cfg.lr)
    if deadline is not None:
        sched.clock_offset = deadline.started - deadline.seconds_before
        sched.deadline_s = deadline.seconds_before + deadline.limit_s
        sched.decay_start_s = deadline.decay_start_s
    return sched


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, last_step: int = 0, deadline: Deadline | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following ``cfg.schedule``; call ``.step()`` once after each optimizer update.

    ``last_step`` > 0 (resuming after that many updates) needs ``initial_lr`` in every param group.
    ``deadline`` (with ``cfg.decay_to == "time"``) ends a cosine / linear decay at the end of the time budget.
    """
    sched = schedule_from_config(cfg, deadline if cfg.decay_to == "time" else None)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, sched, last_epoch=last_step - 1)
