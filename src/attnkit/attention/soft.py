"""Soft attention (spec part 1, item 3): alpha = softmax(s(k_i, q)); output = sum_i alpha_i v_i."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.masks import check_mask, masked_softmax
from attnkit.attention.scoring import Score


class SoftAttentionOutput(NamedTuple):
    output: Tensor  # [B, M, Dv]
    weights: Tensor  # [B, M, N]


def check_values(keys: Tensor, values: Tensor) -> None:
    if values.dim() != 3 or values.shape[:2] != keys.shape[:2]:
        raise ValueError(
            f"values must be [B, N, Dv] with the keys' B and N, got values {tuple(values.shape)} and keys "
            f"{tuple(keys.shape)}"
        )


class SoftAttention(nn.Module):
    """Soft attention with any scoring function, in plain mode (values = keys) or key-value mode."""

    def __init__(self, score: Score) -> None:
        super().__init__()
        self.score = score

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor | None = None, mask: Tensor | None = None,
        dropout: float = 0.0,
    ) -> SoftAttentionOutput:
        """query [B, M, Dq], keys [B, N, Dk], values [B, N, Dv] or None (plain mode: values = keys),
        mask bool broadcastable to [B, M, N]; dropout: on the weights before the weighted sum (training;
        the returned weights are the undropped ones). Returns output [B, M, Dv] and weights [B, M, N]."""
        values = keys if values is None else values
        check_values(keys, values)
        scores = self.score(query, keys)  # (B, M, N)
        if mask is not None:
            check_mask(mask, tuple(scores.shape))
        weights = masked_softmax(scores, mask)
        dropped = F.dropout(weights, dropout) if dropout > 0 else weights
        return SoftAttentionOutput(dropped @ values, weights)
