"""Label-smoothed cross-entropy that ignores padding, returned as a *sum* with its token count.

The training loop divides the sum over all micro-batches (and all processes) by the total count, so the
loss is a mean per target token whatever the batching (see :mod:`attnkit.training.loop`). It lives with
the layers so that models (``Transformer.loss_sum``) and tasks use it without importing the trainer.

Label smoothing (Szegedy et al. 2016; used by the Transformer paper with eps = 0.1) replaces the one-hot
target by ``(1 - eps) * onehot + eps / V`` (PyTorch's convention: the smoothing mass is spread over all V
classes, the true one included), so the per-token loss is
``(1 - eps) * nll + eps * mean_v(-log p_v)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class LossSum(NamedTuple):
    """``total``: scalar sum of per-token losses; ``count``: number of non-ignored targets (int tensor)."""

    total: Tensor
    count: Tensor


def smoothed_cross_entropy(
    logits: Tensor, targets: Tensor, *, smoothing: float = 0.0, ignore_index: int | None = -100
) -> LossSum:
    """Sum of label-smoothed cross-entropy over targets not equal to ``ignore_index``.

    logits: (..., V) float; targets: (...) long.  Computed in float32 (also under autocast), so that
    ``total / count`` equals ``F.cross_entropy(logits, targets, label_smoothing=smoothing,
    ignore_index=ignore_index)``.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)} + (V,)")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    flat = targets.reshape(-1)  # (N,)
    # PyTorch's fused loss (log-softmax, smoothing, ignore_index, sum): fewer passes over the (N, V) logits.
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, reduction="sum",
                            ignore_index=-100 if ignore_index is None else ignore_index, label_smoothing=smoothing)
    if ignore_index is None:
        return LossSum(total, torch.tensor(flat.numel(), device=flat.device))
    return LossSum(total, (flat != ignore_index).sum())
