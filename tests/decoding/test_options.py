"""The decoding options of every encoder-decoder (attnkit.decoding.options, .rules): n-best lists against an
exhaustive search, sampling against the temperature / top-k / top-p distributions (a fixed statistical
tolerance) and its seed, forced prefixes, no repeated n-grams, the a * length + b limit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from attnkit.decoding.options import DecodeOptions, decode
from attnkit.decoding.rules import TokenRules


class TableSession:
    """Next-token logits depend only on the last token (a Markov chain): exhaustive search is cheap."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # [V, V]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]  # (B, t, V)

    def reorder(self, index: torch.Tensor) -> None:
        pass


def _all_finished(table: torch.Tensor, start: int, eos: int, max_len: int, alpha: float) -> list[tuple[float, list]]:
    """Every hypothesis beam search can finish: ends with EOS, or is cut at max_len; scored as it scores them."""
    logp = torch.log_softmax(table.double(), -1)
    out = []
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(table.shape[0]), repeat=n):
            if eos in seq[:-1] or (n < max_len and seq[-1] != eos):
                continue
            s = sum(float(logp[a, b]) for a, b in zip((start, *seq[:-1]), seq, strict=True))
            out.append((s / n**alpha, list(seq)))
    return sorted(out, key=lambda h: -h[0])


@pytest.mark.parametrize("seed, k, alpha", [(0, 3, 1.0), (1, 5, 0.6), (2, 4, 0.0)])
def test_n_best_is_the_k_best_of_an_exhaustive_search(seed: int, k: int, alpha: float) -> None:
    g = torch.Generator().manual_seed(seed)
    v, eos, max_len = 4, 2, 4
    table = torch.randn(v, v, generator=g) * 2
    opts = DecodeOptions(beam_size=v**max_len, n_best=k, length_penalty=alpha)
    hyps = decode(TableSession(table), torch.tensor([[1]]), max_len, eos, 0, TokenRules(), opts)[0]
    every = _all_finished(table, 1, eos, max_len, alpha)
    # the K best scores, by K distinct finished hypotheses scored right (a Markov chain has ties: sequences of
    # the same transitions in another order, so the hypotheses themselves are compared through their scores)
    assert [s for s, _ in hyps] == pytest.approx([s for s, _ in every[:k]], abs=1e-4)
    exact = {tuple(t): s for s, t in every}
    assert len({tuple(t) for _, t in hyps}) == k
    assert all(abs(exact[tuple(t)] - s) < 1e-4 for s, t in hyps)


def _expected(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """The sampling distribution, written out with numpy: softmax(logits / T) restricted to the top k, then to
    the smallest most-likely set of mass >= p, renormalised."""
    z = logits / temperature
    keep = np.ones_like(z, dtype=bool)
    order = np.argsort(-z, kind="stable")
    if top_k is not None:
        keep[order[top_k:]] = False
    p = np.exp(z - z.max()) * keep
    p /= p.sum()
    if top_p is not None:
        mass = 0.0
        for i in order:
            if not keep[i]:
                continue
            if mass >= top_p:
                keep[i] = False
            mass += p[i]
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    return p


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.5, None, None), (1.5, 4, None),
                                                       (1.0, None, 0.7), (0.8, 5, 0.9)])
def test_sampling_follows_the_distribution(temperature: float, top_k: int | None, top_p: float | None) -> None:
    v, n = 8, 40000
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
    table = logits.repeat(v, 1)  # every token is followed by the same distribution
    opts = DecodeOptions(sample=True, temperature=temperature, top_k=top_k, top_p=top_p, seed=123)
    hyps = decode(TableSession(table), torch.zeros(n, 1, dtype=torch.long), 1, -1, 0, TokenRules(), opts)
    counts = np.bincount([h[0][1][0] for h in hyps], minlength=v) / n
    p = _expected(logits.numpy().astype(np.float64), temperature, top_k, top_p)
    assert np.all(counts[p == 0] == 0)
    # 5 standard deviations of a frequency: fails by chance with probability < 1e-5 per token
    assert np.all(np.abs(counts - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12), (counts, p)


def test_sampling_is_repeatable_with_a_seed() -> None:
    table = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    start = torch.zeros(5, 1, dtype=torch.long)

    def draw(seed: int) -> list:
        return decode(TableSession(table), start, 12, -1, 0, TokenRules(), DecodeOptions(sample=True, seed=seed))

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_forced_prefix_then_greedy_continuation() -> None:
    table = torch.randn(6, 6, generator=torch.Generator().manual_seed(3))
    opts = DecodeOptions(prefix=(4, 5))
    got = decode(TableSession(table), torch.tensor([[1]]), 6, -1, 0, TokenRules(), opts)[0][0][1]
    assert got[:2] == [4, 5]
    greedy, prev = [], 5
    for _ in range(4):  # what greedy decoding does after the prefix
        prev = int(table[prev].argmax())
        greedy.append(prev)
    assert got[2:] == greedy
    beam = decode(TableSession(table), torch.tensor([[1]]), 6, -1, 0, TokenRules(), DecodeOptions(beam_size=3,
                                                                                                    prefix=(4, 5)))
    assert beam[0][0][1][:2] == [4, 5]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram(n: int) -> None:
    table = torch.zeros(5, 5)
    table[:, 3] = 5.0  # greedy would repeat token 3 forever
    for opts in (DecodeOptions(no_repeat_ngram=n), DecodeOptions(beam_size=3, no_repeat_ngram=n)):
        out = decode(TableSession(table), torch.tensor([[1]]), 4, -1, 0, TokenRules(), opts)[0][0][1]
        seq = [1, *out]  # the start token counts, as in generate
        grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
        assert len(grams) == len(set(grams)), (n, seq)


def test_length_limit_and_bad_options() -> None:
    opts = DecodeOptions(max_len_a=1.5, max_len_b=3)
    assert opts.budget(10, 100) == 18 and opts.budget(10, 12) == 12
    assert DecodeOptions(max_len_a=0, max_len_b=0, prefix=(5, 6)).budget(4, 50) == 3  # the prefix and one more
    for bad, message in [(dict(n_best=3, beam_size=2), "n_best"), (dict(temperature=0.0), "temperature"),
                         (dict(temperature=math.nan), "temperature"), (dict(top_p=1.5), "top_p"),
                         (dict(top_k=0), "top_k"), (dict(no_repeat_ngram=-1), "no_repeat_ngram"),
                         (dict(sample=True, beam_size=2), "sampling")]:
        with pytest.raises(ValueError, match=message):
            DecodeOptions(**bad)
