"""Sequence classifiers for the long-range study (spec part 1, items 2 and 5): how far can each kind of
network connect two tokens?

* ``cnn``: fixed depth and kernel, so a fixed receptive field (1 + depth * (kernel - 1)), then max-pool;
* ``lstm`` / ``gru``: the last state (gradients through every step in between);
* ``mlp``: fully connected over the flattened sequence (needs a fixed maximum length);
* ``maxpool`` / ``gating``: bottom-up *saliency* attention approximated by max-pooling and by a learned
  gate per position (each position is scored on its own, with no query);
* ``attention``: a Transformer encoder (attnkit's ``TransformerLayer``), read out at the last position.

All map tokens [B, T] to logits [B, C]. ``build_baseline`` picks each model's width so that every model
has about the same number of parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnkit.layers.blocks import TransformerLayer
from attnkit.layers.embeddings import Embeddings
from attnkit.models.params import num_parameters

BASELINES = ("cnn", "lstm", "gru", "mlp", "maxpool", "gating", "attention")


class CNNClassifier(nn.Module):
    """Embedding, ``depth`` same-padded Conv1d+ReLU layers of kernel ``kernel``, max-pool over time."""

    def __init__(self, vocab: int, classes: int, width: int, depth: int = 2, kernel: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, kernel, padding=kernel // 2) for _ in range(depth))
        self.head = nn.Linear(width, classes)
        self.receptive_field = 1 + depth * (kernel - 1)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens).transpose(1, 2)  # (B, E, T)
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.max(dim=2).values)  # (B, C)


class RNNClassifier(nn.Module):
    """Embedding, one-layer LSTM or GRU, linear read-out of the last state."""

    def __init__(self, vocab: int, classes: int, width: int, cell: str = "lstm") -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(width, width, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        h, _ = self.rnn(self.embed(tokens))  # (B, T, E)
        return self.head(h[:, -1])


class MLPClassifier(nn.Module):
    """Fully connected: the embeddings of all ``max_len`` positions flattened, a hidden layer, output.
    Shorter inputs are left-padded with token 0; longer ones are an error (the weakness of a fixed size)."""

    def __init__(self, vocab: int, classes: int, width: int, max_len: int, emb: int = 8) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab, emb)
        self.hidden = nn.Linear(max_len * emb, width)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        b, t = tokens.shape
        if t > self.max_len:
            raise ValueError(f"MLPClassifier takes at most {self.max_len} tokens, got {t}")
        tokens = nn.functional.pad(tokens, (self.max_len - t, 0))
        return self.head(torch.relu(self.hidden(self.embed(tokens).reshape(b, -1))))


class SaliencyClassifier(nn.Module):
    """Embedding, a position-wise MLP, then pooling over positions: ``max`` (max-pooling) or ``gate``
    (a sigmoid gate per position weighs each position's features: sum g_i h_i / sum g_i)."""

    def __init__(self, vocab: int, classes: int, width: int, pool: str = "max") -> None:
        super().__init__()
        self.pool = pool
        self.embed = nn.Embedding(vocab, width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.gate = nn.Linear(width, 1) if pool == "gate" else None
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.mlp(self.embed(tokens))  # (B, T, E)
        if self.gate is None:
            return self.head(h.max(dim=1).values)
        g = torch.sigmoid(self.gate(h))  # (B, T, 1)
        return self.head((g * h).sum(1) / g.sum(1).clamp(min=1e-6))


class SelfAttentionClassifier(nn.Module):
    """Token + learned position embeddings, ``depth`` pre-norm Transformer encoder layers, read-out at the
    last position (which holds the query)."""

    def __init__(self, vocab: int, classes: int, width: int, max_len: int, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = Embeddings(vocab, width, max_len, positions="learned")
        self.layers = nn.ModuleList(
            TransformerLayer(width, heads, 2 * width, dropout=0.0, norm_first=True) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)  # (B, T, E)
        for layer in self.layers:
            x = layer(x).x
        return self.head(self.norm(x[:, -1]))


def _factory(name: str, vocab: int, classes: int, max_len: int, cnn_depth: int, cnn_kernel: int
             ) -> Callable[[int], nn.Module]:
    if name == "cnn":
        return lambda w: CNNClassifier(vocab, classes, w, cnn_depth, cnn_kernel)
    if name in ("lstm", "gru"):
        return lambda w: RNNClassifier(vocab, classes, w, name)
    if name == "mlp":
        return lambda w: MLPClassifier(vocab, classes, w, max_len)
    if name in ("maxpool", "gating"):
        return lambda w: SaliencyClassifier(vocab, classes, w, "max" if name == "maxpool" else "gate")
    if name == "attention":
        return lambda w: SelfAttentionClassifier(vocab, classes, 4 * w, max_len)
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")


def build_baseline(name: str, vocab: int, classes: int, max_len: int, budget: int = 40_000, *,
                   cnn_depth: int = 2, cnn_kernel: int = 3) -> nn.Module:
    """The model ``name`` (one of BASELINES) with the width whose parameter count is closest to ``budget``
    (attention widths are multiples of 4 for its 4 heads)."""
    make = _factory(name, vocab, classes, max_len, cnn_depth, cnn_kernel)
    best, best_gap = None, None
    for w in range(1, 257):
        n = num_parameters(make(w)) if name != "mlp" else (max_len * 8 + 1) * w + vocab * 8 + (w + 1) * classes
        gap = abs(n - budget)
        if best_gap is None or gap < best_gap:
            best, best_gap = w, gap
        elif n > budget:
            break
    assert best is not None
    return make(best)
