"""The long-range task generators: the answer really sits at distance d, found by an independent
for-loop oracle that reads the sequence the way the task's definition says."""

from __future__ import annotations

import pytest
import torch

from attnkit.data.synthetic import TaskSpec, generate


def oracle(spec: TaskSpec, seq: list[int]) -> tuple[int, int]:
    """(label, position of the answer) by reading the sequence: recall = the token after the earlier
    occurrence of the last token; copy = the token after the marker."""
    if spec.task == "recall":
        trigger = seq[-1]
        hits = [i for i in range(len(seq) - 1) if seq[i] == trigger]
        assert len(hits) == 1, f"the query key must occur exactly once before the query, got {hits}"
    else:
        hits = [i for i in range(len(seq)) if seq[i] == spec.key_offset]
        assert len(hits) == 1, f"exactly one marker expected, got {hits}"
    pos = hits[0] + 1
    return seq[pos] - spec.class_offset, pos


@pytest.mark.parametrize("task", ["recall", "copy"])
@pytest.mark.parametrize("d", [2, 4, 16, 64, 256, 1024])
def test_answer_is_at_distance_d(task: str, d: int) -> None:
    spec = TaskSpec(task=task, distance=d)
    batch = generate(spec, 64, seed=d)
    assert batch.tokens.shape == (64, spec.length)
    assert int(batch.tokens.min()) >= 1 and int(batch.tokens.max()) < spec.vocab_size
    for seq, label, apos in zip(batch.tokens.tolist(), batch.labels.tolist(), batch.answer_pos.tolist(),
                                strict=True):
        got_label, got_pos = oracle(spec, seq)
        assert (got_label, got_pos) == (label, apos)
        assert len(seq) - 1 - got_pos == d  # distance from the query (last token) to the answer


def test_recall_has_distractors_with_other_keys() -> None:
    spec = TaskSpec(task="recall", distance=8)
    tokens = generate(spec, 500, seed=3).tokens
    is_value = tokens >= spec.class_offset
    is_key = (tokens >= spec.key_offset) & ~is_value
    assert bool((is_value.sum(1) == spec.n_pairs).all())
    assert bool((is_key.sum(1) == spec.n_pairs + 1).all())  # the pairs' keys + the query
    rows, cols = is_value.nonzero(as_tuple=True)
    assert bool(is_key[rows, cols - 1].all()), "every value follows its key"
    # Distractors land on both sides of the queried pair, so position alone does not give the answer.
    answer = spec.length - 1 - spec.distance
    assert bool((cols > answer).any()) and bool((cols < answer).any())


def test_labels_are_balanced_and_reproducible() -> None:
    spec = TaskSpec(distance=16)
    a, b = generate(spec, 4000, seed=1), generate(spec, 4000, seed=1)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.tokens, generate(spec, 4000, seed=2).tokens)
    freq = torch.bincount(a.labels, minlength=spec.n_classes).float() / 4000
    assert float(freq.min()) > 0.08 and float(freq.max()) < 0.17


def test_bad_specs() -> None:
    with pytest.raises(ValueError, match="task"):
        TaskSpec(task="sort")
    with pytest.raises(ValueError, match="distance"):
        TaskSpec(distance=1)
    with pytest.raises(ValueError, match="n_pairs"):
        TaskSpec(n_pairs=9, n_keys=8)
