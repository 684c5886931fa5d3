"""The translation BPE tokenizer (lossless round trip, fixed special ids) and sacreBLEU wrappers."""

from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu

from attnkit.errors import CheckpointError
from attnkit.evaluation.bleu import corpus_scores
from attnkit.tokenizers.subword import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SubwordTokenizer

TEXTS = ["Ein Mann fährt Fahrrad.", "Two young, White males are outside near many bushes.",
         "Eine Frau (mit Hut) singt \"laut\"!", "A dog runs on the beach."] * 20


def test_bpe_roundtrip_and_specials(tmp_path: Path) -> None:
    tok = SubwordTokenizer.train(TEXTS, vocab_size=200, min_frequency=1)
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    for text in set(TEXTS):
        ids = tok.encode(text)
        assert min(ids) > UNK_ID
        assert tok.decode(ids) == text
    assert tok.decode([BOS_ID] + tok.encode("A dog.") + [EOS_ID, PAD_ID]) == "A dog."
    tok.save(tmp_path / "tokenizer.json")
    again = SubwordTokenizer.load(tmp_path / "tokenizer.json")
    assert again.encode(TEXTS[1]) == tok.encode(TEXTS[1])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read tokenizer"):
        SubwordTokenizer.load(tmp_path / "bad.json")


def test_scores_equal_sacrebleu() -> None:
    hyps = ["A man rides a bike.", "Two dogs play in the snow.", "A woman is singing."]
    refs = ["A man is riding a bicycle.", "Two dogs are playing in the snow.", "A woman sings loudly."]
    s = corpus_scores(hyps, refs)
    assert s.bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s.chrf == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert "case:mixed" in s.signature and "tok:13a" in s.signature
    assert corpus_scores(refs, refs).bleu == pytest.approx(100.0)
    with pytest.raises(ValueError, match="references"):
        corpus_scores(hyps, refs[:2])
