"""Scoring functions s(k, q) of soft attention (spec part 1, item 3).

Each maps ``query [B, M, Dq]`` and ``keys [B, N, Dk]`` to ``scores [B, M, N]``.
"""

from __future__ import annotations

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


def scaled_dot(query: Tensor, keys: Tensor) -> Tensor:
    """The scaled dot-product score s(k, q) = k^T q / sqrt(d) (d the common width), the one formula that
    scaled dot-product attention uses everywhere in attnkit. query [..., M, d], keys [..., N, d] ->
    scores [..., M, N]. The query is scaled before the product (M x d multiplications, not M x N)."""
    return (query * query.shape[-1] ** -0.5) @ keys.transpose(-2, -1)


class ScaledDotScore(Score):
    """Scaled dot-product score: s(k, q) = k^T q / sqrt(d), d the key width (:func:`scaled_dot`)."""

    def _score(self, query: Tensor, keys: Tensor) -> Tensor:
        _same_width(self, query, keys)
        return scaled_dot(query, keys)


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


SCORE_NAMES = ("additive", "dot", "scaled_dot", "bilinear")


def make_score(name: str, query_dim: int, key_dim: int | None = None) -> Score:
    """The scoring function ``name`` (one of :data:`SCORE_NAMES`) for queries [.., query_dim] and keys
    [.., key_dim] (default: query_dim); the additive score's hidden width is query_dim."""
    key_dim = query_dim if key_dim is None else key_dim
    if name == "additive":
        return AdditiveScore(query_dim, key_dim, query_dim)
    if name == "dot":
        return DotScore()
    if name == "scaled_dot":
        return ScaledDotScore()
    if name == "bilinear":
        return BilinearScore(query_dim, key_dim)
    raise ValueError(f"unknown scoring function {name!r}; choose one of {', '.join(SCORE_NAMES)}")
