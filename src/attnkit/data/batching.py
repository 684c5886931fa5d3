"""Batches by token count and padding into tensors, for any model family.

Training batches (shuffled, from length buckets, resumable) come from
:func:`attnkit.data.resumable.token_batches`; this module adds the deterministic length-sorted batches
used for evaluation and inference (:func:`sorted_batches`, which keeps the original order recoverable)
and the padding of id lists into tensors (:func:`pad_sequences`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from attnkit.data.resumable import token_batches

__all__ = ["LazyBatches", "pad_sequences", "sorted_batches", "token_batches"]


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0, *, bos: int | None = None,
                  eos: int | None = None) -> Tensor:
    """List of id lists -> [B, L] long tensor, right-padded with ``pad_id`` (optionally with BOS/EOS
    added around each sequence). L is the longest sequence (at least 1)."""
    rows = [([bos] if bos is not None else []) + list(s) + ([eos] if eos is not None else []) for s in seqs]
    width = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def sorted_batches(lengths: Sequence[int], max_tokens: int, max_batch: int | None = None) -> list[list[int]]:
    """Indices sorted by length (longest first) and cut into batches of at most ``max_tokens`` padded
    tokens (and ``max_batch`` examples); every index appears exactly once. For decoding a test set:
    little padding, and the first batch shows at once whether the longest sentences fit in memory."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        full = max_batch is not None and len(current) >= max_batch
        if current and (max(longest, 1) * (len(current) + 1) > max_tokens or full):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class LazyBatches(Sequence):
    """An epoch's batches for the training loop, built when the loop asks for one (index lists are
    cheap, tensors are not): item ``i`` is ``build(i, groups[i])``."""

    def __init__(self, groups: list[list[int]], build: Callable[[int, list[int]], Any]) -> None:
        self.groups, self.build = groups, build

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        return self.build(i, self.groups[i])


class InOrder:
    """Hands the outputs of batches on in input order: ``on_done(start, outputs[start:stop])`` once output
    ``start`` and every one before it are done (decoding in length-sorted batches, writing as we go).
    ``outputs`` is the list (or tensor) the batches fill; call the object with each batch's indices."""

    def __init__(self, outputs: Any, on_done: Callable[[int, Any], None] | None) -> None:
        self.outputs, self.on_done = outputs, on_done
        self.done = [False] * len(outputs)
        self.next = 0  # outputs before this one have been handed on

    def __call__(self, batch: Sequence[int]) -> None:
        if self.on_done is None:
            return
        for i in batch:
            self.done[i] = True
        start = self.next
        while self.next < len(self.done) and self.done[self.next]:
            self.next += 1
        if self.next > start:
            self.on_done(start, self.outputs[start : self.next])
