"""Synthetic long-range tasks (spec part 1, item 5): the answer depends on a token exactly ``d`` positions
before the end of the sequence, so a model's accuracy against ``d`` measures how far it connects tokens.

* ``recall``: key-value pairs are scattered among filler tokens; the last token is a query key and the
  answer is the value paired with it. The queried pair's value sits ``d`` positions before the query;
  distractor pairs (other keys) sit anywhere else, so finding "some value" is not enough: the model must
  relate the query with a key ``d + 1`` positions away.
* ``copy``: a marker token is followed by the token to copy, ``d`` positions before the end; the last
  token is a fixed query token.

Vocabulary (both tasks): 0 = padding (unused here, reserved), 1..n_fillers = fillers, then keys (or the
marker and the query), then the answer tokens. Answers are class indices 0..n_classes-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

TASKS = ("recall", "copy")


@dataclass(frozen=True)
class TaskSpec:
    """task: "recall" or "copy"; distance d >= 2; prefix: free positions before the answer's region (room
    for distractors); n_fillers / n_keys / n_classes: vocabulary sizes; n_pairs: key-value pairs in a
    recall sequence (the queried one + distractors)."""

    task: str = "recall"
    distance: int = 16
    prefix: int = 8
    n_fillers: int = 4
    n_keys: int = 8
    n_classes: int = 8
    n_pairs: int = 4

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.distance < 2:
            raise ValueError(f"distance must be >= 2, got {self.distance}")
        if self.n_pairs > self.n_keys:
            raise ValueError(f"n_pairs ({self.n_pairs}) cannot exceed n_keys ({self.n_keys})")
        if self.prefix < 2 * (self.n_pairs - 1) + 1:
            raise ValueError(f"prefix {self.prefix} too short for {self.n_pairs - 1} distractor pairs")

    @property
    def length(self) -> int:
        """T: prefix, the key (recall) or marker (copy), the answer token, d - 1 tokens, the query."""
        return self.prefix + self.distance + 2

    @property
    def vocab_size(self) -> int:
        return 1 + self.n_fillers + self.n_keys + self.n_classes

    @property
    def key_offset(self) -> int:
        return 1 + self.n_fillers

    @property
    def class_offset(self) -> int:
        return 1 + self.n_fillers + self.n_keys


class TaskBatch(NamedTuple):
    tokens: Tensor  # [N, T] token ids
    labels: Tensor  # [N] class index of the answer
    answer_pos: Tensor  # [N] position of the answer token (always T - 1 - d)


def generate(spec: TaskSpec, n: int, seed: int) -> TaskBatch:
    """``n`` sequences of the task, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    t, d = spec.length, spec.distance
    tokens = torch.randint(1, 1 + spec.n_fillers, (n, t), generator=g)
    labels = torch.randint(0, spec.n_classes, (n,), generator=g)
    answer = t - 1 - d
    tokens[:, answer] = spec.class_offset + labels
    if spec.task == "copy":
        tokens[:, answer - 1] = spec.key_offset  # the marker
        tokens[:, -1] = spec.key_offset + 1  # the query
        return TaskBatch(tokens, labels, torch.full((n,), answer))
    keys = torch.argsort(torch.rand(n, spec.n_keys, generator=g), dim=1)[:, : spec.n_pairs]  # distinct keys
    tokens[:, answer - 1] = spec.key_offset + keys[:, 0]
    tokens[:, -1] = spec.key_offset + keys[:, 0]
    values = torch.randint(0, spec.n_classes, (n, spec.n_pairs), generator=g)
    starts = _distractor_starts(spec, n, g)  # (n, n_pairs - 1)
    rows = torch.arange(n).unsqueeze(1)
    tokens[rows, starts] = spec.key_offset + keys[:, 1:]
    tokens[rows, starts + 1] = spec.class_offset + values[:, 1:]
    return TaskBatch(tokens, labels, torch.full((n,), answer))


def _distractor_starts(spec: TaskSpec, n: int, g: torch.Generator) -> Tensor:
    """Start positions of the distractor pairs: non-overlapping two-token slots anywhere except the
    queried pair and the query. Slots are aligned to even offsets from the sequence's start within the
    prefix and to the region between answer and query, so random choice without replacement suffices."""
    t, d = spec.length, spec.distance
    answer = t - 1 - d
    slots = [p for p in range(0, answer - 2, 2)]  # prefix slots: [p, p + 1] < answer - 1
    slots += [p for p in range(answer + 1, t - 2, 2)]  # between the answer and the query
    slots_t = torch.tensor(slots)
    choice = torch.argsort(torch.rand(n, len(slots), generator=g), dim=1)[:, : spec.n_pairs - 1]
    return slots_t[choice]
