"""Token-count batching and padding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnkit.data.batching import pad_sequences, sorted_batches, token_batches


@given(st.lists(st.integers(1, 40), min_size=1, max_size=200), st.integers(1, 300), st.one_of(st.none(),
       st.integers(1, 20)))
def test_sorted_batches_partition_and_budget(lengths: list[int], max_tokens: int, max_batch: int | None) -> None:
    batches = sorted_batches(lengths, max_tokens, max_batch)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        if len(b) > 1:
            assert max(lengths[i] for i in b) * len(b) <= max_tokens
        if max_batch is not None:
            assert len(b) <= max_batch
    # Longest first, so length never increases along the flattened order.
    assert all(lengths[a] >= lengths[b] for a, b in zip(flat, flat[1:], strict=False))


@given(st.lists(st.integers(1, 40), min_size=1, max_size=200), st.integers(1, 300))
def test_training_batches_partition_and_budget(lengths: list[int], max_tokens: int) -> None:
    batches = token_batches(lengths, max_tokens, seed=3, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        if len(b) > 1:
            assert max(lengths[i] for i in b) * len(b) <= max_tokens
    assert token_batches(lengths, max_tokens, seed=3, epoch=1) == batches


def test_pad_sequences() -> None:
    t = pad_sequences([[5, 6], [7], []], pad_id=0, bos=1, eos=2)
    assert t.tolist() == [[1, 5, 6, 2], [1, 7, 2, 0], [1, 2, 0, 0]]
    assert pad_sequences([[]]).tolist() == [[0]]


def test_bad_budget() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        sorted_batches([1, 2], 0)
