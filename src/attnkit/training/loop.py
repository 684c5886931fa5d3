"""The one training loop of attnkit: every model family trains through :func:`train`.

One step: take this process's ``grad_accum`` micro-batches from the :class:`BatchStream`; sum their target
counts over all processes (``N``); for each micro-batch back-propagate ``loss_sum * world / N`` (DDP
averages gradients over the ``world`` processes, so the gradient is that of ``sum(all losses) / N``); stop
with :class:`TrainingDivergedError` if the global loss is NaN/inf; unscale (fp16), clip, step, schedule.

Under torchrun the model is wrapped in DDP, or with ``shard`` (``--shard``) sharded with FSDP2
(:mod:`attnkit.training.sharding`): the same step, the same checkpoints (consolidated weights).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from attnkit import __version__
from attnkit.data.resumable import BatchStream, DataPosition
from attnkit.errors import AttnkitError, CheckpointError, InputError
from attnkit.training import checkpoint as ck
from attnkit.training import distributed as D
from attnkit.training import sharding
from attnkit.training.auto_precision import PrecisionChoice, choose_precision
from attnkit.training.config import TrainConfig
from attnkit.training.metrics import MetricsLog, progress_bar
from attnkit.training.optim import autocast, build_optimizer, check_precision, grad_scaler
from attnkit.training.schedules import Deadline, build_scheduler

# One optimizer update may read the training data at most this many times (gradient accumulation).
MAX_EPOCHS_PER_UPDATE = 10


class TrainingDivergedError(AttnkitError):
    """The loss became NaN or infinite; raised before the bad update is applied or saved."""


class TrainTask(Protocol):
    """What a model family gives :func:`train` (``evaluate``, ``metadata``, ``save_extra`` are optional)."""

    family: str

    def batches(self, epoch: int) -> Sequence[Any]:
        """Global micro-batches of one epoch, depending only on (seed, epoch)."""

    def count(self, batch: Any) -> int:
        """Number of target tokens (examples for classification) that ``loss`` sums over."""

    def loss(self, model: nn.Module, batch: Any) -> Tensor | tuple[Tensor, Any]:
        """Sum (not mean) of per-target losses of ``batch``; may return ``(sum, count)``."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimizer updates done in total (including those before a resume)
    stop_reason: str  # "max_steps" | "time_limit" | "signal"
    losses: list[float] = field(default_factory=list)  # global mean loss of each step of this call
    checkpoint: Path | None = None  # the last checkpoint written or resumed from
    eval: dict[str, float] = field(default_factory=dict)  # the last evaluation's metrics
    resumed_from: int | None = None


def move_to(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device`` (tensors, dicts, lists, tuples, NamedTuples,
    dataclasses)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    if hasattr(batch, "__dataclass_fields__") and not isinstance(batch, type):
        return type(batch)(**{k: move_to(getattr(batch, k), device) for k in batch.__dataclass_fields__})
    return batch


class _StopFlag:
    """First SIGINT/SIGTERM: finish the step, checkpoint, return.  A second Ctrl-C (SIGINT) more than a
    second later: the previous handler (abort).  Further SIGTERMs are ignored, because torchrun answers a
    Ctrl-C by sending SIGTERM to its workers, and then SIGKILL after a grace period anyway."""

    def __init__(self) -> None:
        self.raised = False
        self._first = 0.0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.raised:
            self.raised, self._first = True, time.monotonic()
        elif signum == signal.SIGINT and time.monotonic() - self._first > 1.0:  # Ctrl-C again: stop now
            self.__exit__()
            signal.raise_signal(signum)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module) -> Any:
    """Accumulate gradients without reduce-scattering them (FSDP2's counterpart of DDP's no_sync)."""
    model.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)  # type: ignore[operator]


@contextlib.contextmanager
def _rng_fork() -> Any:
    """Run a block (evaluation) without changing any global random state, so resume stays exact."""
    state = ck.capture_rng_state()
    try:
        yield
    finally:
        ck.restore_rng_state(state)


def _check_run_family(run_dir: Path, family: str) -> None:
    path = run_dir / ck.RUN_FILE
    if path.is_file():
        meta = ck.read_meta_file(path)
        if meta.get("family") != family:
            raise CheckpointError(f"{path}: run of a {meta.get('family')!r} model, not {family!r}; use another run dir")


def train(
    task: TrainTask,
    model: nn.Module,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    optimizer_factory: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` in ``run_dir``, resuming from its latest checkpoint if it has one."""
    info = D.setup(cfg.device)
    try:
        return _Trainer(task, model, cfg, Path(run_dir), info, optimizer_factory).run()
    finally:
        D.teardown(info)


class _Trainer:
    def __init__(self, task, model, cfg, run_dir, info, optimizer_factory) -> None:  # noqa: ANN001
        self.task, self.cfg, self.run_dir, self.info = task, cfg, run_dir, info
        self.device = info.device
        check_precision(cfg.precision, self.device)
        self.model = model.to(self.device)  # the plain module (or, sharded, the FSDP one): saved, evaluated
        self.sharded = cfg.shard and info.distributed
        if self.sharded:
            sharding.shard_model(self.model)  # before the optimizer: it must hold the sharded parameters
        self.optimizer = (optimizer_factory or build_optimizer)(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = grad_scaler(cfg.precision, self.device)
        self.log = MetricsLog(run_dir, info.is_main)
        self.step, self.elapsed_before = 0, 0.0
        self.decay_start_before: float | None = None  # --decay-to time: where warm-up ended (training seconds)
        self.probe_s = 0.0  # seconds spent choosing --precision auto (they count against the time limit)
        self.position = DataPosition()
        self.meta = {"family": task.family, "attnkit_version": __version__,
                     **(task.metadata() if hasattr(task, "metadata") else {})}
        self.result = TrainResult(run_dir, 0, "max_steps")

    # ------------------------------------------------------------------------------------------ set-up
    def _prepare_run_dir(self) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise InputError(f"{self.run_dir}: exists and is not a directory (give a run directory)")
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _check_run_family(self.run_dir, self.task.family)
        D.barrier(self.info)
        latest = ck.latest_checkpoint(self.run_dir)
        if latest is None:
            torch.manual_seed(self.cfg.seed + self.info.rank)  # dropout differs between processes
            if self.cfg.precision == "auto":
                self._choose_precision()
            if self.info.is_main:
                ck.atomic_write_json(self.run_dir / ck.RUN_FILE, self.meta)
                if hasattr(self.task, "save_extra"):
                    self.task.save_extra(self.run_dir)
        else:
            if self.cfg.precision == "auto":  # keep what the first session chose (its train_config.json)
                saved = self.run_dir / "train_config.json"
                self.cfg.precision = TrainConfig.load(saved).precision if saved.is_file() else "fp32"
                self.scaler = grad_scaler(self.cfg.precision, self.device)
            try:
                self._resume(latest)
            except CheckpointError as exc:
                older = ck.list_checkpoints(self.run_dir)[:-1]
                if not older:
                    raise
                raise CheckpointError(f"{exc} (delete {latest} to resume from {older[-1].name})") from None
        if self.info.is_main:
            self.cfg.save(self.run_dir / "train_config.json")
            self.log.truncate_after(self.step)

    def _choose_precision(self) -> None:
        """Resolve ``--precision auto`` by timing this model's step on the first batch (training.auto_precision)."""
        started = time.monotonic()
        batches = self.task.batches(0)
        if not len(batches):
            choice = PrecisionChoice("fp32", "fp32: no training batch to time", {})
        else:
            batch = move_to(batches[0], self.device)

            def step() -> Tensor:
                out = self.task.loss(self.model, batch)
                return out[0] if isinstance(out, tuple) else out

            reduce = (lambda t: D.all_reduce_sum(t, self.info)) if self.info.distributed else None
            choice = choose_precision(step, self.model, self.device, reduce=reduce)
        self.cfg.precision = choice.precision
        self.scaler = grad_scaler(choice.precision, self.device)
        self.probe_s = time.monotonic() - started
        self.meta["precision_auto"] = {"chosen": choice.precision, "reason": choice.reason,
                                       "step_seconds": choice.seconds, "probe_seconds": self.probe_s}
        if self.info.is_main:
            print(f"attnkit: note: --precision auto: {choice.reason}", file=sys.stderr, flush=True)

    def _resume(self, ckpt: Path) -> None:
        ck.load_model_weights(self.model, ckpt, self.task.family)
        state = ck.load_training_state(ckpt, map_location="cpu")
        base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]  # peak lrs of this run's config
        try:
            if self.sharded:
                sharding.load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            self.step = int(state["step"])
            self.elapsed_before = float(state["elapsed_s"])
            self.decay_start_before = state.get("decay_start_s")
            self.position = DataPosition.from_dict(state["position"])
            rng = state["rng"]
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{ckpt / ck.STATE_FILE}: training state does not fit this run ({exc})") from None
        if len(rng) == self.info.world:
            ck.restore_rng_state(rng[self.info.rank])
        else:  # another number of processes: data position is still exact, random streams are not
            ck.restore_rng_state(rng[0])
            torch.manual_seed(self.cfg.seed + 1000 * self.step + self.info.rank)
        # The schedule is a function of the step under the *current* config (--lr, --steps may change).
        for group, lr in zip(self.optimizer.param_groups, base_lrs, strict=True):
            group["initial_lr"] = lr
        self.scheduler = build_scheduler(self.optimizer, self.cfg, last_step=self.step)
        self.result.resumed_from = self.step
        self.result.checkpoint = ckpt

    def _wrap(self) -> nn.Module:
        net: nn.Module = self.model
        if self.info.distributed and not self.sharded:
            net = nn.parallel.DistributedDataParallel(
                net,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(self.task, "find_unused_parameters", False)),
            )
        if self.cfg.compile:
            net = torch.compile(net)
        return net

    # --------------------------------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        self._prepare_run_dir()
        self._check_grad_accum()
        self.net = self._wrap()
        stream = BatchStream(self.task.batches, self.position)
        self.started = started = time.monotonic()
        if self.cfg.decay_to == "time":  # the decay ends with this session's time limit
            assert self.cfg.time_limit_s is not None  # (validated)
            deadline = Deadline(started, self.elapsed_before, self.cfg.time_limit_s - self.probe_s,
                                self.decay_start_before)
            self.scheduler = build_scheduler(self.optimizer, self.cfg, last_step=self.step, deadline=deadline)
        bar = progress_bar(self.cfg.max_steps, self.step, self.info.is_main and not self.cfg.quiet)
        window = {"loss": 0.0, "tokens": 0.0, "t": time.monotonic()}
        saved_at = evaluated_at = -1
        try:
            with _StopFlag() as self.stop:
                while self.step < self.cfg.max_steps:
                    loss, tokens, stopping = self._one_step(stream)
                    self.result.losses.append(loss)
                    window["loss"] += loss * tokens
                    window["tokens"] += tokens
                    bar.update(1)
                    if self.step % self.cfg.log_every == 0 or stopping or self.step == self.cfg.max_steps:
                        self._log_train(window, stream, started, bar)
                    if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                        self._evaluate(started)
                        evaluated_at = self.step
                    if stopping or (self.cfg.ckpt_every and self.step % self.cfg.ckpt_every == 0):
                        self._save(stream.position, started)
                        saved_at = self.step
                    if stopping:
                        self.result.stop_reason = self.stop_reason
                        break
        finally:
            bar.close()
        if saved_at != self.step and self.step > (self.result.resumed_from or 0):
            self._save(stream.position, started)
        if self.result.stop_reason != "signal" and evaluated_at != self.step:
            self._evaluate(started)
        self.result.step = self.step
        return self.result

    def _check_grad_accum(self) -> None:
        """InputError when one update would read the training data more than MAX_EPOCHS_PER_UPDATE times: not
        a bigger batch but a step that never ends (the time limit and signals act between steps)."""
        per_epoch = len(self.task.batches(self.position.epoch))
        wanted = self.cfg.grad_accum * self.info.world
        if per_epoch and wanted > MAX_EPOCHS_PER_UPDATE * per_epoch:  # (no batches: the stream says so)
            raise InputError(f"grad_accum {self.cfg.grad_accum} would make one update read the training data "
                             f"{wanted / max(per_epoch, 1):.0f} times (an epoch has {per_epoch} micro-batches); "
                             f"use at most {MAX_EPOCHS_PER_UPDATE * per_epoch // self.info.world}")

    def _over_time(self) -> bool:
        return (self.cfg.time_limit_s is not None
                and time.monotonic() - self.started + self.probe_s > self.cfg.time_limit_s)

    def _one_step(self, stream: BatchStream) -> tuple[float, float, bool]:
        cfg, info = self.cfg, self.info
        micro = stream.next_step(cfg.grad_accum, info.rank, info.world)
        counts = [int(self.task.count(b)) for b in micro]
        total = float(sum(counts))
        if info.distributed:
            total = float(D.all_reduce_sum(torch.tensor(total, device=self.device), info).item())
        if total <= 0:
            raise AttnkitError(f"step {self.step + 1}: the batches have no target tokens to train on")
        self.net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for j, batch in enumerate(micro):
            sync = not info.distributed or j == len(micro) - 1
            with contextlib.nullcontext() if sync else self._no_sync():
                with autocast(cfg.precision, self.device):
                    out = self.task.loss(self.net, move_to(batch, self.device))
                summed = out[0] if isinstance(out, tuple) else out
                if isinstance(out, tuple) and self.step == (self.result.resumed_from or 0) and int(out[1]) != counts[j]:
                    raise ValueError(f"task.loss counted {int(out[1])} targets but task.count said {counts[j]}")
                self.scaler.scale(summed.float() * (info.world / total)).backward()
            loss_sum += summed.detach().double()
        flags = [float(self.stop.raised), float(self._over_time())]
        stats = torch.cat([loss_sum.view(1), torch.tensor(flags, dtype=torch.float64, device=self.device)])
        loss_total, signalled, over_time = D.all_reduce_sum(stats, info).tolist()
        loss = loss_total / total
        if not math.isfinite(loss):
            self._diverged(f"loss is {loss}")
        self.scaler.unscale_(self.optimizer)
        clip = cfg.clip_norm if cfg.clip_norm is not None else math.inf
        self.grad_norm = sharding.total_norm(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(self.grad_norm) and not self.scaler.is_enabled():  # fp16: the scaler skips it
            self._diverged(f"gradient norm is {self.grad_norm} (loss {loss:.4g})")
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        if signalled:
            self.stop_reason = "signal"
        elif over_time:
            self.stop_reason = "time_limit"
        return loss, total, bool(signalled or over_time)

    def _diverged(self, what: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        last = ck.latest_checkpoint(self.run_dir)
        raise TrainingDivergedError(
            f"{what} at step {self.step + 1}; training stopped without applying or saving this update "
            f"(last good checkpoint: {last or 'none'}); try a lower --lr, longer --warmup or --clip"
        )

    def _no_sync(self) -> contextlib.AbstractContextManager:
        if self.sharded:
            return _fsdp_no_sync(self.model)
        ddp = ck.unwrap_ddp(self.net)
        return ddp.no_sync() if ddp is not None else contextlib.nullcontext()

    # ---------------------------------------------------------------------------------- side effects
    def _log_train(self, window: dict, stream: BatchStream, started: float, bar: Any) -> None:
        now = time.monotonic()
        rec = {
            "kind": "train", "step": self.step, "epoch": stream.position.epoch,
            "loss": window["loss"] / max(window["tokens"], 1.0), "lr": self.lr, "grad_norm": float(self.grad_norm),
            "tokens_per_s": window["tokens"] / max(now - window["t"], 1e-9),
            "elapsed_s": self.elapsed_before + now - started,
        }
        if self.scaler.is_enabled():
            rec["loss_scale"] = float(self.scaler.get_scale())
        self.log.write(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{self.lr:.2e}", tok_s=f"{rec['tokens_per_s']:.0f}")
        window.update(loss=0.0, tokens=0.0, t=now)

    def _evaluate(self, started: float) -> None:
        # Sharded, every process runs the evaluation (each forward all-gathers); the main one logs it.
        if not hasattr(self.task, "evaluate") or not (self.info.is_main or self.sharded):
            return
        self.model.eval()
        with _rng_fork(), torch.no_grad(), autocast(self.cfg.precision, self.device):
            metrics = dict(self.task.evaluate(self.model))
        self.model.train()
        self.result.eval = metrics
        if not self.info.is_main:
            return
        elapsed = self.elapsed_before + time.monotonic() - started
        self.log.write({"kind": "eval", "step": self.step, "elapsed_s": elapsed, **metrics})

    def _save(self, position: DataPosition, started: float) -> None:
        rngs = D.all_gather_objects(ck.capture_rng_state(), self.info)
        weights: nn.Module | dict = self.model
        optimizer_state = None
        if self.sharded:  # consolidated on the main process (collective)
            weights = sharding.full_model_state(self.model)
            optimizer_state = sharding.full_optimizer_state(self.model, self.optimizer)
        if self.info.is_main:
            state = {
                "optimizer": optimizer_state or self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),  # a record: on resume the current flags decide
                "scaler": self.scaler.state_dict(), "step": self.step, "position": position.to_dict(),
                "elapsed_s": self.elapsed_before + time.monotonic() - started, "rng": rngs,
                "world": self.info.world,
            }
            decay_start = getattr(self.scheduler.lr_lambdas[0], "decay_start_s", None)
            if decay_start is not None:
                state["decay_start_s"] = decay_start
            meta = {**self.meta, "train_config": self.cfg.to_dict()}
            self.result.checkpoint = ck.save_checkpoint(self.run_dir, self.step, weights, state, meta,
                                                        self.cfg.keep_last)
        D.barrier(self.info)
