"""Labelled sentences in ``label<TAB>sentence`` files (SST-2's format) and a fixed held-out split.

Malformed rows are reported by line number (all of them, up to a few) before any training starts. The
SST-2 test split used throughout attnkit is ``holdout_split(n, 0.1, seed=0)`` of ``sst2/train.tsv``:
a seeded permutation of the row indices whose last 10% are held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnkit.data.lines import read_lines
from attnkit.errors import InputError

HEADERS = {("label", "sentence"), ("sentence", "label")}
MAX_REPORTED = 5


@dataclass
class LabelledText:
    labels: list[str]  # one label per example, as written in the file
    sentences: list[str]
    line_numbers: list[int]  # 1-based line of each example in the file

    def __len__(self) -> int:
        return len(self.sentences)

    def subset(self, indices: list[int]) -> LabelledText:
        return LabelledText(
            [self.labels[i] for i in indices], [self.sentences[i] for i in indices],
            [self.line_numbers[i] for i in indices],
        )


def read_tsv(path: str | Path) -> LabelledText:
    """Read ``label<TAB>sentence`` rows (an optional header ``label<TAB>sentence`` or the reverse order is
    recognised). Raises InputError listing the line numbers of rows without exactly one tab, with an
    empty label or with an empty sentence."""
    path = Path(path)
    lines = read_lines(path)
    label_col, start = 0, 0
    if lines:
        head = tuple(f.strip().lower() for f in lines[0].split("\t"))
        if head in HEADERS:
            label_col, start = head.index("label"), 1
    labels, sentences, numbers, bad = [], [], [], []
    for n, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) carry no example
        fields = line.split("\t")
        problem = None
        if len(fields) != 2:
            problem = f"expected 2 tab-separated fields, found {len(fields)}"
        elif not fields[label_col].strip():
            problem = "empty label"
        elif not fields[1 - label_col].strip():
            problem = "empty sentence"
        if problem:
            bad.append(f"line {n}: {problem}")
            continue
        labels.append(fields[label_col].strip())
        sentences.append(fields[1 - label_col].strip())
        numbers.append(n)
    if bad:
        more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
        raise InputError(f"{path}: {len(bad)} malformed row(s): " + "; ".join(bad[:MAX_REPORTED]) + more)
    if not sentences:
        raise InputError(f"{path}: no labelled sentences found (expected label<TAB>sentence rows)")
    return LabelledText(labels, sentences, numbers)


def holdout_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): a permutation seeded by ``seed``, the last
    ``round(fraction * n)`` held out. The same (n, fraction, seed) always gives the same split."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    k = max(1, round(fraction * n)) if n > 1 else 0
    return sorted(order[: n - k]), sorted(order[n - k :])
