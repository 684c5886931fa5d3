"""BatchStream sharding/resume, and deterministic epoch batching."""

from __future__ import annotations

import numpy as np
import pytest

from attnkit.data.resumable import BatchStream, DataPosition, fixed_size_batches, token_batches
from attnkit.errors import InputError


def _epochs(sizes: dict[int, int]):
    return lambda epoch: [(epoch, i) for i in range(sizes.get(epoch, 5))]


def test_ranks_share_each_epoch_exactly_once() -> None:
    world, accum, steps = 3, 2, 9
    streams = [BatchStream(_epochs({0: 7, 1: 11})) for _ in range(world)]
    seen = []
    for _ in range(steps):
        for r, s in enumerate(streams):
            seen.extend(s.next_step(accum, r, world))
    assert seen[:7] == [(0, i) for i in range(7)]  # epoch 0 fully, in order, once
    assert seen[7:18] == [(1, i) for i in range(11)]
    assert len(seen) == world * accum * steps
    assert len({s.position.to_dict()["index"] for s in streams}) == 1


def test_resume_from_position_replays_the_stream() -> None:
    a = BatchStream(_epochs({}))
    for _ in range(4):
        a.next_step(3)
    pos = DataPosition.from_dict(a.position.to_dict())
    b = BatchStream(_epochs({}), pos)
    assert [a.next_step(2) for _ in range(5)] == [b.next_step(2) for _ in range(5)]


def test_empty_epoch_raises_input_error() -> None:
    with pytest.raises(InputError, match="epoch 0"):
        BatchStream(lambda e: []).next_step(1)


def test_token_batches_cover_once_respect_budget_and_are_deterministic() -> None:
    lengths = np.random.default_rng(0).integers(1, 40, 500).tolist() + [100]
    b1 = token_batches(lengths, 120, seed=3, epoch=2)
    assert sorted(i for b in b1 for i in b) == list(range(501))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120 for b in b1)
    assert b1 == token_batches(lengths, 120, seed=3, epoch=2)
    assert b1 != token_batches(lengths, 120, seed=3, epoch=3)


def test_fixed_size_batches() -> None:
    b = fixed_size_batches(10, 4, seed=0, epoch=0)
    assert [len(x) for x in b] == [4, 4, 2] and sorted(sum(b, [])) == list(range(10))
    assert fixed_size_batches(5, 2, 0, 0, shuffle=False) == [[0, 1], [2, 3], [4]]
