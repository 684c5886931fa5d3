"""The training configuration shared by every model family, and the command-line flags that fill it.

Every training command (``translate train``, ``lm train``, ``mlm train``, ``classify train``) calls
:func:`add_train_args` on its parser and :func:`train_config_from_args` on the parsed arguments, so all
commands accept the same flags with the same meaning.  A family chooses its own defaults by passing a
:class:`TrainConfig` as ``defaults``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from attnkit.config_io import JsonConfig
from attnkit.errors import InputError

SCHEDULES = ("noam", "inverse_sqrt", "cosine", "linear", "constant")
DECAY_TO = ("steps", "time")  # where a cosine / linear decay ends: --steps, or the end of --time-limit
PRECISIONS = ("fp32", "bf16", "fp16")
TRAIN_PRECISIONS = (*PRECISIONS, "auto")  # auto: timed on the run's first batch (training.auto_precision)


@dataclass
class TrainConfig(JsonConfig, family="training", presets=()):
    """Hyper-parameters of one training run (serialised as ``train_config.json`` in the run directory).

    ``max_steps`` counts optimizer updates.  One update consumes ``grad_accum`` micro-batches on each of
    the ``world`` processes, and the loss is the sum of per-token losses over all of them divided by their
    total number of target tokens, so accumulation and data parallelism give the update of one big batch.
    ``eval_every``/``ckpt_every``/``log_every`` are in steps (0 = only at the end).
    """

    max_steps: int = 1000
    lr: float = 1e-3
    warmup: int = 0
    schedule: str = "constant"
    min_lr: float = 0.0
    decay_to: str = "steps"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    clip_norm: float | None = 1.0
    grad_accum: int = 1
    precision: str = "fp32"
    device: str = "auto"
    compile: bool = False
    eval_every: int = 0
    ckpt_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    seed: int = 0
    time_limit_s: float | None = None
    quiet: bool = False
    shard: bool = False  # under torchrun: FSDP2 (parameters, gradients, optimizer state sharded) instead of DDP
    extra: dict = field(default_factory=dict)  # free-form family settings recorded with the run

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad value."""
        checks = [
            (self.max_steps >= 0, f"steps must be >= 0, got {self.max_steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.lr < math.inf, f"lr must be finite, got {self.lr}"),
            (self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.decay_to in DECAY_TO, f"decay_to must be one of {DECAY_TO}, got {self.decay_to!r}"),
            (self.decay_to != "time" or self.time_limit_s is not None,
             "--decay-to time needs --time-limit (the decay ends when the time budget does)"),
            (self.decay_to != "time" or self.schedule in ("cosine", "linear"),
             f"--decay-to time needs --schedule cosine or linear, got {self.schedule!r}"),
            (0 <= self.min_lr <= self.lr, f"min_lr must be in [0, lr], got {self.min_lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.weight_decay < math.inf, f"weight_decay must be finite, got {self.weight_decay}"),
            (all(0 <= b < 1 for b in self.betas), f"betas must be in [0, 1), got {self.betas}"),
            (self.eps > 0, f"eps must be > 0, got {self.eps}"),
            (self.eps < math.inf, f"eps must be finite, got {self.eps}"),
            (self.clip_norm is None or self.clip_norm > 0, f"clip must be > 0, got {self.clip_norm}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.precision in TRAIN_PRECISIONS,
             f"precision must be one of {TRAIN_PRECISIONS}, got {self.precision!r}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.ckpt_every >= 0, f"ckpt_every must be >= 0, got {self.ckpt_every}"),
            (self.keep_last >= 1, f"keep must be >= 1, got {self.keep_last}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}"),  # numpy's streams need >= 0
            (self.time_limit_s is None or self.time_limit_s > 0, f"time_limit must be > 0, got {self.time_limit_s}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def to_dict(self) -> dict:
        """The JSON object; ``shard`` and ``decay_to`` only when not the default (earlier runs' files unchanged)."""
        d = {**super().to_dict(), "betas": list(self.betas)}
        if not d["shard"]:
            del d["shard"]
        if d["decay_to"] == "steps":
            del d["decay_to"]
        return d


def _none_or_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off", "0") else float(text)


def add_train_args(parser: argparse.ArgumentParser, defaults: TrainConfig | None = None) -> None:
    """Add the flags common to every training command (batch size flags are the family's own)."""
    d = defaults or TrainConfig()
    g = parser.add_argument_group("training (common to every model family)")
    g.add_argument("--steps", type=int, default=d.max_steps, help="optimizer updates (default %(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)")
    g.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps (default %(default)s)")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="after warm-up (default %(default)s)")
    g.add_argument("--min-lr", type=float, default=d.min_lr, help="floor of cosine/linear decay")
    g.add_argument("--decay-to", choices=DECAY_TO, default=d.decay_to,
                   help="cosine/linear decay ends at --steps, or 'time': at the end of --time-limit "
                        "(whichever comes first; default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW decay of >=2-D weights")
    g.add_argument("--betas", type=float, nargs=2, default=list(d.betas), metavar=("B1", "B2"))
    g.add_argument("--eps", type=float, default=d.eps, help="Adam epsilon (default %(default)s)")
    g.add_argument("--clip", type=_none_or_float, default=d.clip_norm, help="gradient norm clip, 'none' = off")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per update")
    g.add_argument("--precision", choices=TRAIN_PRECISIONS, default=d.precision,
                   help="autocast dtype; auto: the faster of fp32 / bf16 for this model, timed (default %(default)s)")
    g.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N (default %(default)s)")
    g.add_argument("--compile", action="store_true", default=d.compile, help="torch.compile the model")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between evaluations (0 = end)")
    g.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="steps between checkpoints (0 = end)")
    g.add_argument("--keep", type=int, default=d.keep_last, help="checkpoints kept (default %(default)s)")
    g.add_argument("--log-every", type=int, default=d.log_every, help="steps between metrics.jsonl lines")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    g.add_argument("--time-limit", type=float, default=d.time_limit_s, help="seconds; then checkpoint and stop")
    g.add_argument("--quiet", action="store_true", default=d.quiet, help="no progress bar")
    g.add_argument("--shard", action="store_true", default=d.shard,
                   help="under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP")


def train_config_from_args(args: argparse.Namespace, **extra: object) -> TrainConfig:
    """Build the :class:`TrainConfig` from flags added by :func:`add_train_args`."""
    return TrainConfig(
        max_steps=args.steps,
        lr=args.lr,
        warmup=args.warmup,
        schedule=args.schedule,
        min_lr=args.min_lr,
        decay_to=args.decay_to,
        weight_decay=args.weight_decay,
        betas=tuple(args.betas),
        eps=args.eps,
        clip_norm=args.clip,
        grad_accum=args.grad_accum,
        precision=args.precision,
        device=args.device,
        compile=args.compile,
        eval_every=args.eval_every,
        ckpt_every=args.ckpt_every,
        keep_last=args.keep,
        log_every=args.log_every,
        seed=args.seed,
        time_limit_s=args.time_limit,
        quiet=args.quiet,
        shard=args.shard,
        extra=dict(extra),
    )
