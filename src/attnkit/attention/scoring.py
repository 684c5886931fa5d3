"""Scoring functions s(k, q) of soft attention (spec part 1, item 3).

Each maps ``query [B, M, Dq]`` and ``keys [B, N, Dk]`` to ``scores [B, M, N]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Score(nn.Module):
    """Base class: checks shapes, then calls ``_score``."""

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        if query.dim() != 3 or keys.dim() != 3:
            raise ValueError(
                f"{type(self).__name__} expects query [B, M, Dq] and keys [B, N, Dk], "
                f"got {tuple(query.shape)} and {tuple(keys.shape)}"
            )
        if query.shape[0] != keys.shape[0]:
            raise ValueError(
                f"query and keys have different batch sizes: {tuple(query.shape)} vs {tuple(keys.shape)}"
            )
        return self._score(query, keys)

    def _score(self, query: Tensor, keys: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _same_width(score: Score, query: Tensor, keys: Tensor) -> None:
    if query.shape[-1] != keys.shape[-1]:
        raise ValueError(
            f"{type(score).__name__} needs query and key widths to match, got query {tuple(query.shape)} "
            f"and keys {tuple(keys.shape)}"
        )


class AdditiveScore(Score):
    """Additive (Bahdanau) score: s(k, q) = v^T tanh(W k + U q)."""

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.W = nn.Linear(key_dim, hidden_dim, bias=False)
        self.U = nn.Linear(query_dim, hidden_dim, bias=False)
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def _score(self, query: Tensor, keys: Tensor) -> Tensor:
        if query.shape[-1] != self.U.in_features or keys.shape[-1] != self.W.in_features:
            raise ValueError(
                f"AdditiveScore(query_dim={self.U.in_features}, key_dim={self.W.in_features}) got query "
                f"{tuple(query.shape)} and keys {tuple(keys.shape)}"
            )
        hidden = torch.tanh(self.W(keys).unsqueeze(1) + self.U(query).unsqueeze(2))  # (B, M, N, Dh)
        return self.v(hidden).squeeze(-1)  # (B, M, N)


class DotScore(Score):
    """Dot-product score: s(k, q) = k^T q."""

    def _score(self, query: Tensor, keys: Tensor) -> Tensor:
        _same_width(self, query, keys)
        return query @ keys.transpose(1, 2)  # (B, M, N)


class ScaledDotScore(Score):
    """Scaled dot-product score: s(k, q) = k^T q / sqrt(d), d the key width."""

    def _score(self, query: Tensor, keys: Tensor) -> Tensor:
        _same_width(self, query, keys)
        return query @ keys.transpose(1, 2) / math.sqrt(keys.shape[-1])


class BilinearScore(Score):
    """Bilinear (Luong "general") score: s(k, q) = k^T W q."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(key_dim, query_dim))
        nn.init.xavier_uniform_(self.W)

    def _score(self, query: Tensor, keys: Tensor) -> Tensor:
        if query.shape[-1] != self.W.shape[1] or keys.shape[-1] != self.W.shape[0]:
            raise ValueError(
                f"BilinearScore(query_dim={self.W.shape[1]}, key_dim={self.W.shape[0]}) got query "
                f"{tuple(query.shape)} and keys {tuple(keys.shape)}"
            )
        return (query @ self.W.T) @ keys.transpose(1, 2)  # (B, M, N)
