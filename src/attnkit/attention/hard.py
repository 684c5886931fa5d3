"""Hard attention (spec part 1, item 4): attend to one position, the most probable (argmax) or one
sampled from the attention distribution. Not differentiable through the choice, so the scorer is trained
with REINFORCE through ``log_prob``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from attnkit.attention.masks import check_mask
from attnkit.attention.scoring import Score
from attnkit.attention.soft import check_values


class HardAttentionOutput(NamedTuple):
    output: Tensor  # [B, M, Dv], the chosen value
    weights: Tensor  # [B, M, N], one-hot on the chosen key
    log_prob: Tensor  # [B, M], log-probability of the choice under the attention distribution
    index: Tensor  # [B, M], the chosen key


class HardAttention(nn.Module):
    """Hard attention with any scoring function; ``mode`` is "argmax" or "sample"."""

    def __init__(self, score: Score, mode: str = "argmax") -> None:
        super().__init__()
        if mode not in ("argmax", "sample"):
            raise ValueError(f"HardAttention mode must be 'argmax' or 'sample', got {mode!r}")
        self.score = score
        self.mode = mode

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> HardAttentionOutput:
        """query [B, M, Dq], keys [B, N, Dk], values [B, N, Dv] or None (= keys), mask broadcastable to
        [B, M, N]. A query with every key masked gets output 0, zero weights and log_prob 0."""
        values = keys if values is None else values
        check_values(keys, values)
        scores = self.score(query, keys)  # (B, M, N)
        allowed = torch.ones_like(scores, dtype=torch.bool)
        if mask is not None:
            check_mask(mask, tuple(scores.shape))
            allowed = allowed & mask
        any_allowed = allowed.any(-1)  # (B, M)
        # Rows with nothing allowed get a uniform dummy distribution; their result is zeroed below.
        safe = allowed | ~any_allowed.unsqueeze(-1)
        log_p = torch.log_softmax(scores.masked_fill(~safe, float("-inf")), dim=-1)  # (B, M, N)
        if self.mode == "argmax":
            index = log_p.argmax(-1)
        else:
            flat = log_p.detach().exp().reshape(-1, log_p.shape[-1])
            index = torch.multinomial(flat, 1, generator=generator).view(log_p.shape[:-1])
        weights = torch.zeros_like(scores).scatter_(-1, index.unsqueeze(-1), 1.0)
        weights = weights * any_allowed.unsqueeze(-1)
        log_prob = log_p.gather(-1, index.unsqueeze(-1)).squeeze(-1) * any_allowed
        return HardAttentionOutput(weights @ values, weights, log_prob, index)


def reinforce_loss(log_prob: Tensor, reward: Tensor, baseline: Tensor | float | None = None) -> Tensor:
    """REINFORCE surrogate loss: -mean((reward - baseline) * log_prob).

    Its gradient is the policy-gradient estimate of -d E[reward] / d theta. ``reward`` (any shape
    broadcastable to log_prob [B, M]) and ``baseline`` are treated as constants (no gradient flows
    into them); a baseline such as a running mean of the reward reduces the variance.
    """
    advantage = reward.detach() if isinstance(reward, Tensor) else torch.as_tensor(reward)
    if baseline is not None:
        advantage = advantage - (baseline.detach() if isinstance(baseline, Tensor) else baseline)
    return -(advantage * log_prob).mean()
