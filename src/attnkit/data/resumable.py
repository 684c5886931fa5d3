"""A resumable, shardable stream of training batches, and deterministic per-epoch orders.

A model family describes an epoch as a *sequence of global micro-batches* that depends only on
``(seed, epoch)`` (e.g. :func:`token_batches` of the shuffled corpus).  :class:`BatchStream` chains the
epochs into one endless stream; each optimizer step takes the next ``world * grad_accum`` micro-batches
and process ``rank`` keeps the ``grad_accum`` of them at ``[rank * grad_accum, (rank + 1) * grad_accum)``.
So every micro-batch is used exactly once per epoch by exactly one process, a step may straddle two
epochs, and the whole state is :class:`DataPosition` ``(epoch, index)``: restoring it replays the
stream exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from attnkit.errors import InputError

B = TypeVar("B")


@dataclass
class DataPosition:
    """Next global micro-batch to use: batch ``index`` of epoch ``epoch``'s order."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict) -> DataPosition:
        return cls(int(d["epoch"]), int(d["index"]))


class BatchStream(Generic[B]):
    """Endless stream over ``epoch_batches(0)``, ``epoch_batches(1)``, ... starting at ``position``.

    ``epoch_batches(epoch)`` must return the same sequence every time it is called with the same epoch
    (it is called once per epoch on every process); its items may be built lazily in ``__getitem__``.
    """

    def __init__(self, epoch_batches: Callable[[int], Sequence[B]], position: DataPosition | None = None):
        self._epoch_batches = epoch_batches
        self.position = DataPosition(**(position or DataPosition()).to_dict())
        self._cached_epoch: int | None = None
        self._cached: Sequence[B] = ()

    def _epoch(self, epoch: int) -> Sequence[B]:
        if self._cached_epoch != epoch:
            self._cached = self._epoch_batches(epoch)
            self._cached_epoch = epoch
            if len(self._cached) == 0:
                raise InputError(f"the training data gives no batches for epoch {epoch} (is it empty?)")
        return self._cached

    def next_step(self, per_rank: int, rank: int = 0, world: int = 1) -> list[B]:
        """This process's ``per_rank`` micro-batches of the next step; advances by ``per_rank * world``."""
        if not 0 <= rank < world or per_rank < 1:
            raise ValueError(f"bad rank/world/per_rank: {rank}/{world}/{per_rank}")
        mine: list[B] = []
        first, last = rank * per_rank, (rank + 1) * per_rank
        for i in range(per_rank * world):
            batches = self._epoch(self.position.epoch)
            if first <= i < last:
                mine.append(batches[self.position.index])
            self.position.index += 1
            if self.position.index >= len(batches):
                self.position = DataPosition(self.position.epoch + 1, 0)
        return mine


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random generator of one epoch: independent of any global random state and of the process."""
    return np.random.default_rng([seed, epoch])


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``."""
    return epoch_rng(seed, epoch).permutation(n).tolist()


def token_batches(
    lengths: Sequence[int], max_tokens: int, seed: int, epoch: int, *, pool: int = 100
) -> list[list[int]]:
    """Group example indices into batches of at most ``max_tokens`` padded tokens, deterministically.

    Examples are shuffled by ``(seed, epoch)``, sorted by length inside pools of ``pool * batch`` examples
    (so padding is small), packed greedily so that ``len(batch) * max(length) <= max_tokens`` (an example
    longer than ``max_tokens`` gets a batch of its own), and the batch order is shuffled.  Every index
    appears exactly once.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    rng = epoch_rng(seed, epoch)
    order = rng.permutation(len(lengths))
    mean = max(1.0, float(np.mean(lengths))) if len(lengths) else 1.0
    chunk = max(1, int(pool * max_tokens / mean))
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk].tolist(), key=lambda i: lengths[i])
        current: list[int] = []
        longest = 0
        for i in part:
            longest_if_added = max(longest, lengths[i])
            if current and longest_if_added * (len(current) + 1) > max_tokens:
                batches.append(current)
                current, longest_if_added = [], lengths[i]
            current.append(i)
            longest = longest_if_added
        if current:
            batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


def fixed_size_batches(n: int, batch_size: int, seed: int, epoch: int, *, shuffle: bool = True) -> list[list[int]]:
    """``range(n)`` (shuffled by ``(seed, epoch)`` if ``shuffle``) cut into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = epoch_permutation(n, seed, epoch) if shuffle else list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
