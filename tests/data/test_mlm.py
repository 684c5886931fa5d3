"""BERT's masked-LM corruption: 15% chosen, of which 80% [MASK] / 10% random / 10% unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.data.mlm import IGNORE, batch_generator, mask_tokens

V, MASK, SPECIALS = 500, 4, [0, 1, 2, 3, 4]


def _batch(b: int = 400, t: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    ids = torch.randint(5, V, (b, t), generator=g)
    lengths = torch.randint(3, t + 1, (b,), generator=g)
    attn = (torch.arange(t)[None] < lengths[:, None]).long()
    ids[:, 0] = 2  # [CLS]
    ids[torch.arange(b), lengths - 1] = 3  # [SEP]
    ids[attn == 0] = 0  # [PAD]
    return ids, attn


def _within(observed: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def test_proportions_are_15_percent_then_80_10_10() -> None:
    ids, attn = _batch()
    out = mask_tokens(ids, attn, mask_id=MASK, vocab_size=V, special_ids=SPECIALS,
                      generator=torch.Generator().manual_seed(0))
    candidates = attn.bool() & (ids > 4)
    chosen = out.labels != IGNORE
    n_cand, n_chosen = int(candidates.sum()), int(chosen.sum())
    assert n_cand > 10_000
    assert _within(n_chosen / n_cand, 0.15, n_cand)
    assert not (chosen & ~candidates).any(), "special tokens and padding are never chosen"
    assert torch.equal(out.labels[chosen], ids[chosen]), "labels are the original tokens"
    assert torch.equal(out.input_ids[~chosen], ids[~chosen]), "positions not chosen are untouched"
    masked = int((out.input_ids[chosen] == MASK).sum())
    unchanged = int((out.input_ids[chosen] == ids[chosen]).sum())
    replaced = n_chosen - masked - unchanged
    # A random replacement equal to the original by chance (1/495) counts as unchanged: negligible.
    assert _within(masked / n_chosen, 0.8, n_chosen)
    assert _within(unchanged / n_chosen, 0.1 + 0.1 / (V - 5), n_chosen)
    assert _within(replaced / n_chosen, 0.1 - 0.1 / (V - 5), n_chosen)
    randoms = out.input_ids[chosen & (out.input_ids != MASK) & (out.input_ids != ids)]
    assert (randoms > 4).all(), "random replacements are never special tokens"
    # Uniform over the 495 ordinary ids: no id takes far more than its share.
    assert torch.bincount(randoms, minlength=V).max() < 0.02 * len(randoms) + 5


def test_seeded_and_reproducible() -> None:
    ids, attn = _batch(20, 30)
    kw = dict(mask_id=MASK, vocab_size=V, special_ids=SPECIALS)
    a = mask_tokens(ids, attn, generator=batch_generator(7, 1, 3), **kw)
    b = mask_tokens(ids, attn, generator=batch_generator(7, 1, 3), **kw)
    c = mask_tokens(ids, attn, generator=batch_generator(7, 1, 4), **kw)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)


def test_a_batch_always_has_a_target() -> None:
    ids = torch.tensor([[2, 10, 3]])
    attn = torch.ones_like(ids)
    for seed in range(30):  # with prob 0.15 the lone token is often not drawn: one is then forced
        out = mask_tokens(ids, attn, mask_id=MASK, vocab_size=V, special_ids=SPECIALS,
                          generator=torch.Generator().manual_seed(seed))
        assert out.labels.tolist() == [[IGNORE, 10, IGNORE]]


def test_bad_arguments() -> None:
    ids = torch.tensor([[2, 10, 3]])
    with pytest.raises(ValueError, match="differ"):
        mask_tokens(ids, ids[:, :2], mask_id=MASK, vocab_size=V, special_ids=SPECIALS,
                    generator=torch.Generator())
    with pytest.raises(ValueError, match="probabilities"):
        mask_tokens(ids, torch.ones_like(ids), mask_id=MASK, vocab_size=V, special_ids=SPECIALS,
                    generator=torch.Generator(), prob=0.0)
