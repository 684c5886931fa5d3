"""Training infrastructure shared by every model family (translation, GPT LM, BERT MLM, classification).

How a family trains a model
---------------------------
1. CLI: ``add_train_args(parser, defaults=TrainConfig(lr=..., warmup=..., schedule="noam"))`` adds the
   common flags (``--steps --lr --warmup --schedule --min-lr --weight-decay --betas --eps --clip
   --grad-accum --precision fp32|bf16|fp16 --device --compile --eval-every --ckpt-every --keep
   --log-every --seed --time-limit --quiet``); batch-size flags are the family's own.  Then
   ``cfg = train_config_from_args(args)``.
2. Write a task object (duck-typed, see :class:`TrainTask`)::

       class GptTask:
           family = "gpt"                       # stored in every checkpoint, checked on load
           find_unused_parameters = False       # optional, for DDP
           def batches(self, epoch) -> Sequence[Batch]:
               # ALL global micro-batches of one epoch, a function of (seed, epoch) only: never use the
               # global random state here (use attnkit.data.resumable.epoch_rng / token_batches /
               # fixed_size_batches).  Items may be built lazily in __getitem__.  CPU tensors are fine:
               # the loop moves tensors (also inside dicts/tuples/NamedTuples/dataclasses) to the device.
           def count(self, batch) -> int:        # number of targets the loss sums over (non-pad tokens)
           def loss(self, model, batch):         # SUM (not mean) of per-target losses: a scalar tensor,
               ...                               # or (sum, count) e.g. smoothed_cross_entropy(...).
                                                 # Call model(...) (forward), so DDP/compile apply.
           def evaluate(self, model) -> dict[str, float]:   # optional; rank 0, eval mode, no_grad,
               ...                                          # autocast; global RNG restored afterwards
           def metadata(self) -> dict:           # optional; JSON: e.g. {"model_config": cfg.to_dict()}
           def save_extra(self, run_dir): ...    # optional; e.g. write tokenizer.json (fresh run only)

3. ``result = train(task, model, cfg, run_dir)`` -> :class:`TrainResult` (``step``, ``stop_reason``
   "max_steps"|"time_limit"|"signal", ``losses`` of this call, ``checkpoint``, ``eval``,
   ``resumed_from``); print summaries only ``if is_main_process()`` (torchrun runs the CLI N times).
   If ``run_dir`` already has a checkpoint, training resumes from it exactly (weights, optimizer, grad
   scaler, data position, python/numpy/torch/CUDA random states; the lr schedule follows the current
   flags at the restored step).  To change the optimizer pass ``optimizer_factory=lambda model, cfg:
   ...``.  SIGINT/SIGTERM: the current step finishes, a checkpoint is written, ``train`` returns with
   ``stop_reason == "signal"`` (a second Ctrl-C more than 1 s later aborts at once).  NaN/inf loss, or
   NaN/inf gradient norm without fp16 loss scaling: :class:`TrainingDivergedError` (an
   ``AttnkitError``) naming the step; the bad update is neither applied nor saved.
4. Inference: ``meta = read_meta(run_dir, family="gpt")`` (the family's metadata, e.g. the model
   config), build the model, then ``load_model_weights(model, run_dir, family="gpt")``.  A missing,
   truncated or corrupt file, weights that do not fit the model, or another family's checkpoint raise
   :class:`attnkit.errors.CheckpointError` naming the file.

Semantics
---------
* Loss normalisation: one update = ``grad_accum`` micro-batches on each of ``world`` processes; the loss
  is the sum of per-target losses over all of them / their total count, so accumulation and DDP equal one
  big batch.  Logged ``loss`` is that global per-token mean.
* Distributed: run under ``torchrun --nproc_per_node=N [--nnodes ...] -m attnkit <family> train ...``;
  gloo on CPU, NCCL on GPU (``cuda:LOCAL_RANK``); only rank 0 writes run.json, metrics, checkpoints and
  the progress bar; all ranks read the checkpoint to resume (the run dir must be on a shared filesystem
  for multi-node runs).  Step ``s`` uses the next ``world*grad_accum`` micro-batches of the endless
  epoch stream; rank ``r`` takes ``[r*grad_accum, (r+1)*grad_accum)`` of them (each batch once per epoch).
* Precision: ``fp32``; ``bf16`` autocast; ``fp16`` autocast + dynamic loss scaling (GradScaler, also on
  CPU).  ``--compile``: torch.compile of the (DDP-wrapped) model; checkpoints never contain the
  ``_orig_mod.``/``module.`` prefixes, and loading strips them, so compiled and plain models interchange.
* Optimizer: AdamW(lr, betas, eps); weight decay on >= 2-D weights only.  Schedules: see ``schedules``.
* Run directory layout and atomic checkpoints: see :mod:`attnkit.training.checkpoint`.  ``metrics.jsonl``
  has ``{"kind": "train", step, epoch, loss, lr, grad_norm, tokens_per_s, elapsed_s[, loss_scale]}`` and
  ``{"kind": "eval", step, elapsed_s, **evaluate()}`` lines.
"""

from attnkit.data.resumable import BatchStream, DataPosition, epoch_permutation, epoch_rng, token_batches
from attnkit.layers.losses import LossSum, smoothed_cross_entropy
from attnkit.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    read_meta,
    read_weights,
    strip_wrapper_prefixes,
    weights_to_bytes,
)
from attnkit.training.config import TrainConfig, add_train_args, train_config_from_args
from attnkit.training.distributed import is_main_process
from attnkit.training.loop import TrainingDivergedError, TrainResult, TrainTask, move_to, train
from attnkit.training.optim import build_optimizer
from attnkit.training.schedules import Schedule, build_scheduler, noam_peak_lr

__all__ = [
    "BatchStream", "DataPosition", "LossSum", "Schedule", "TrainConfig", "TrainResult", "TrainTask",
    "TrainingDivergedError", "add_train_args", "build_optimizer", "build_scheduler", "epoch_permutation",
    "epoch_rng", "is_main_process", "latest_checkpoint", "list_checkpoints", "load_model_weights", "move_to",
    "noam_peak_lr", "read_meta", "read_weights", "smoothed_cross_entropy", "strip_wrapper_prefixes", "token_batches",
    "train", "train_config_from_args", "weights_to_bytes",
]
