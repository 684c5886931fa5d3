"""Classification accuracy (sentence labels, masked-token predictions)."""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of positions where ``predictions[i] == labels[i]`` (both length N, N >= 1)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        raise ValueError("accuracy of no examples is undefined")
    return sum(int(p == y) for p, y in zip(predictions, labels, strict=True)) / len(labels)
