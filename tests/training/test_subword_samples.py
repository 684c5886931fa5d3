"""BPE-dropout: the tokenizer's sampled segmentations, and the per-epoch sample files of a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnkit.errors import CheckpointError
from attnkit.tokenizers.subword import SubwordTokenizer
from attnkit.training.subword_samples import EpochSamples

TEXTS = ["ein Mann mit einem orangefarbenen Hut", "zwei Hunde spielen im Schnee", "eine Frau liest ein Buch",
         "Kinder spielen auf einem Spielplatz", "ein Hund rennt durch das Gras"] * 20


@pytest.fixture(scope="module")
def tok() -> SubwordTokenizer:
    return SubwordTokenizer.train(TEXTS, vocab_size=200)


def test_sample_batch_resegments_the_same_text(tok: SubwordTokenizer) -> None:
    plain = tok.encode_batch(TEXTS[:5])
    assert tok.sample_batch(TEXTS[:5], 0.0) == plain
    draws = [tok.sample_batch(TEXTS[:5], 0.5) for _ in range(4)]
    for draw in draws:
        assert [tok.decode(ids) for ids in draw] == [tok.decode(ids) for ids in plain]
        assert all(0 <= i < tok.vocab_size for ids in draw for i in ids)
    assert any(draw != plain for draw in draws) and any(a != b for a, b in zip(draws, draws[1:], strict=False))
    assert tok.encode_batch(TEXTS[:5]) == plain  # the tokenizer itself is left without dropout
    with pytest.raises(ValueError, match=r"BPE-dropout must be in \[0, 1\), got 1.0"):
        tok.sample_batch(TEXTS[:5], 1.0)


def test_epoch_samples_are_drawn_once_kept_and_pruned(tmp_path: Path) -> None:
    drawn: list[int] = []

    def draw() -> tuple[list[list[int]], list[list[int]]]:
        drawn.append(1)
        n = len(drawn)
        return [[n, 5, 6], [], [n]], [[7] * n, [8], [9, n]]

    store = EpochSamples(tmp_path / "s", draw, pairs=3)
    first = store.get(0)
    assert store.get(0) == first and len(drawn) == 1
    again = EpochSamples(tmp_path / "s", draw, pairs=3)  # a resumed process reads the file
    assert again.get(0) == first and len(drawn) == 1
    assert again.get(1) != first and len(drawn) == 2
    again.get(2)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["epoch-00001.safetensors", "epoch-00002.safetensors"]
    again.get(3)  # the epoch before is kept (a run resumes in the epoch it stopped in, or the next)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["epoch-00002.safetensors", "epoch-00003.safetensors"]
    with pytest.raises(CheckpointError, match="a sample of 3 pairs, but the corpus has 4"):
        EpochSamples(tmp_path / "s", draw, pairs=4).get(3)
    (tmp_path / "s" / "epoch-00003.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable BPE-dropout sample"):
        EpochSamples(tmp_path / "s", draw, pairs=3).get(3)
    with pytest.raises(ValueError, match="a sample has 3/3 pairs, the corpus 2"):
        EpochSamples(tmp_path / "t", draw, pairs=2).get(0)
