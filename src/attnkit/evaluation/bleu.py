"""Translation quality with sacreBLEU: BLEU (cased, detokenized, the default ``13a`` tokenizer) and chrF.

Hypotheses and references are plain detokenized sentences, so the figures are comparable with published
sacreBLEU scores (not with lowercased, tokenized multi-bleu figures, which are higher).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sacrebleu


@dataclass
class TranslationScores:
    bleu: float  # corpus BLEU, 0-100
    chrf: float  # corpus chrF, 0-100
    signature: str  # sacreBLEU's BLEU signature (settings and version)

    def to_dict(self) -> dict:
        return {"bleu": self.bleu, "chrf": self.chrf, "signature": self.signature}


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> TranslationScores:
    """Corpus BLEU and chrF of ``hypotheses`` against one reference each (same length)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = sacrebleu.metrics.CHRF().corpus_score(list(hypotheses), [list(references)])
    return TranslationScores(float(b.score), float(c.score), str(bleu.get_signature()))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    return corpus_scores(hypotheses, references).bleu
