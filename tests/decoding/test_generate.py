"""The shared generation loop: top-k / top-p filtering against for-loop oracles, stop tokens and padding,
seeds, and left padding, on a scripted DecoderSession (no model needed)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnkit.decoding.generate import GenerationConfig, filter_logits, generate, left_pad


def _topp_oracle(row: list[float], p: float) -> set[int]:
    probs = torch.softmax(torch.tensor(row, dtype=torch.float64), -1).tolist()
    order = sorted(range(len(row)), key=lambda i: -probs[i])
    kept, mass = set(), 0.0
    for i in order:
        if mass >= p:
            break
        kept.add(i)
        mass += probs[i]
    return kept


def test_filter_logits_top_k_and_top_p_match_oracles() -> None:
    torch.manual_seed(0)
    logits = torch.randn(20, 30) * 3
    for k in (1, 5, 30):
        kept = torch.isfinite(filter_logits(logits, top_k=k))
        assert (kept.sum(-1) == k).all()
        assert torch.equal(kept, logits >= torch.topk(logits, k).values[:, -1:])
    for p in (0.1, 0.5, 0.9, 0.999):
        kept = torch.isfinite(filter_logits(logits, top_p=p))
        for row, mask in zip(logits.tolist(), kept, strict=True):
            assert set(torch.nonzero(mask).flatten().tolist()) == _topp_oracle(row, p)


class Scripted:
    """A DecoderSession whose next-token distribution depends on the last token only: (last + 1) % V
    wins by a margin, so greedy decoding is predictable."""

    def __init__(self, v: int = 10) -> None:
        self.v, self.calls = v, []

    def step(self, tokens: Tensor) -> Tensor:
        self.calls.append(tokens.shape[1])
        logits = torch.zeros(*tokens.shape, self.v)
        logits.scatter_(-1, ((tokens + 1) % self.v)[..., None], 5.0)
        return logits

    def reorder(self, index: Tensor) -> None:  # pragma: no cover - not used here
        pass


def test_greedy_stop_tokens_and_padding() -> None:
    prompt = torch.tensor([[1], [5]])
    out = generate(Scripted(), prompt, GenerationConfig(max_new_tokens=6, stop_tokens=(4,), pad_id=-1))
    # row 0: 2, 3, 4 (stop) then pad; row 1: 6, 7, 8, 9, 0, 1 (never stops)
    assert out.tolist() == [[2, 3, 4, -1, -1, -1], [6, 7, 8, 9, 0, 1]]
    session = Scripted()
    out = generate(session, torch.tensor([[1], [2]]), GenerationConfig(max_new_tokens=6, stop_tokens=(4,)))
    assert out.shape == (2, 3) and session.calls == [1, 1, 1]  # all rows stopped: no further steps
    assert generate(Scripted(), prompt, GenerationConfig(max_new_tokens=0)).shape == (2, 0)
    with pytest.raises(ValueError, match="prompt must be"):
        generate(Scripted(), torch.zeros(2, 0, dtype=torch.long), GenerationConfig())


def test_sampling_is_reproducible_with_a_seed() -> None:
    cfg = GenerationConfig(max_new_tokens=30, temperature=2.0, seed=11)
    a = generate(Scripted(), torch.tensor([[0]]), cfg)
    assert torch.equal(a, generate(Scripted(), torch.tensor([[0]]), cfg))
    assert not torch.equal(a, generate(Scripted(), torch.tensor([[0]]), GenerationConfig(30, 2.0, seed=12)))
    greedy_like = generate(Scripted(), torch.tensor([[0]]), GenerationConfig(30, 1.0, top_k=1, seed=1))
    assert greedy_like.tolist()[0] == [(i + 1) % 10 for i in range(30)]


def test_left_pad() -> None:
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]
    with pytest.raises(ValueError):
        left_pad([[1], []])
