"""A toy alignment task for every scoring function of part 1 (the attention demo).

Each example is N (key, value) token pairs and a query token equal to one of the keys; the model must
output the value paired with it. It embeds keys, values and the query, attends with soft attention in
key-value mode using the chosen scoring function, and classifies the attended vector. Attention that
learned the alignment puts its weight on the matching key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit.attention import AdditiveScore, BilinearScore, DotScore, ScaledDotScore, Score, SoftAttention

SCORES = ("additive", "dot", "scaled_dot", "bilinear")


def make_score(name: str, dim: int) -> Score:
    """A scoring function by name: additive, dot, scaled_dot or bilinear (query and key width ``dim``)."""
    if name == "additive":
        return AdditiveScore(dim, dim, dim)
    if name == "dot":
        return DotScore()
    if name == "scaled_dot":
        return ScaledDotScore()
    if name == "bilinear":
        return BilinearScore(dim, dim)
    raise ValueError(f"unknown scoring function {name!r}; choose one of {', '.join(SCORES)}")


def make_batch(batch: int, pairs: int, vocab: int, generator: torch.Generator) -> tuple[Tensor, ...]:
    """keys, values [B, N] (distinct keys per row), query [B, 1], answer position [B], answer value [B]."""
    keys = torch.argsort(torch.rand(batch, vocab, generator=generator), dim=1)[:, :pairs]
    values = torch.randint(0, vocab, (batch, pairs), generator=generator)
    pos = torch.randint(0, pairs, (batch,), generator=generator)
    query = keys.gather(1, pos[:, None])
    return keys, values, query, pos, values.gather(1, pos[:, None]).squeeze(1)


class AlignmentModel(nn.Module):
    def __init__(self, score: str, vocab: int = 32, dim: int = 32) -> None:
        super().__init__()
        self.key_emb, self.value_emb = nn.Embedding(vocab, dim), nn.Embedding(vocab, dim)
        self.attention = SoftAttention(make_score(score, dim))
        self.out = nn.Linear(dim, vocab)

    def forward(self, keys: Tensor, values: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """keys, values [B, N], query [B, 1] -> logits [B, vocab], weights [B, N]."""
        k = self.key_emb(keys)
        out, w = self.attention(self.key_emb(query), k, self.value_emb(values))  # (B, 1, D), (B, 1, N)
        return self.out(out[:, 0]), w[:, 0]


@dataclass
class DemoResult:
    score: str
    accuracy: float  # held-out answer accuracy
    alignment: float  # how often the largest attention weight sits on the matching key
    weights: Tensor  # [n_show, N] attention weights of a few held-out examples
    keys: Tensor  # [n_show, N]
    query: Tensor  # [n_show]


def train_alignment(score: str, *, steps: int = 400, pairs: int = 8, vocab: int = 32, seed: int = 0) -> DemoResult:
    """Train one model with ``score`` and evaluate it on 2,000 held-out examples."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = AlignmentModel(score, vocab)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        keys, values, query, _, answer = make_batch(128, pairs, vocab, g)
        logits, _ = model(keys, values, query)
        loss = nn.functional.cross_entropy(logits, answer)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        keys, values, query, pos, answer = make_batch(2000, pairs, vocab, torch.Generator().manual_seed(seed + 1))
        logits, w = model(keys, values, query)
    return DemoResult(
        score,
        (logits.argmax(-1) == answer).float().mean().item(),
        (w.argmax(-1) == pos).float().mean().item(),
        w[:4],
        keys[:4],
        query[:4, 0],
    )
