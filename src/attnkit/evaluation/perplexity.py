"""Language-model loss and perplexity: the mean next-token cross-entropy (nats) and its exponential."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.text import sequential_blocks
from attnkit.derived import frozen_weights


class LMEval(NamedTuple):
    loss: float  # mean cross-entropy per target token, in nats
    perplexity: float  # exp(loss)
    tokens: int  # number of target tokens evaluated


def lm_loss_sum(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Sum over all targets of -log p(y | x): x, y [B, T] -> scalar (the training loop divides by the
    number of targets)."""
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")


@torch.no_grad()
def evaluate_lm(
    model: nn.Module, ids: np.ndarray, block_size: int, batch_size: int = 32, *,
    max_batches: int | None = None, device: torch.device | str | None = None,
) -> LMEval:
    """Loss and perplexity of ``model`` on the token ids [N], over consecutive non-overlapping blocks of
    ``block_size`` tokens (each target predicted from up to block_size - 1 tokens of its own block), or
    over the first ``max_batches`` batches of them."""
    if len(ids) < 2:
        raise ValueError(f"need at least 2 tokens to evaluate a language model, got {len(ids)}")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with frozen_weights():  # derived weight copies made once for all batches
            for i, (x, y) in enumerate(sequential_blocks(ids, block_size, batch_size)):
                if max_batches is not None and i >= max_batches:
                    break
                total += float(lm_loss_sum(model, x.to(device), y.to(device)))
                count += y.numel()
    finally:
        model.train(was_training)
    loss = total / count
    return LMEval(loss, math.exp(min(loss, 700.0)), count)
