"""Constraints on the next token, shared by greedy decoding, sampling and beam search: tokens that are never
generated (Marian's padding: Hugging Face's ``bad_words_ids``), forced first tokens (a target-language code,
``forced_bos_token_id``, or a user's ``--prefix``), end of sentence forced at the length limit
(``forced_eos_token_id``) and no repeated n-gram (``no_repeat_ngram_size``).

They edit the scores of one step, [R, V] (R session rows), by setting the excluded tokens to -inf and, for a
forced token, every other one: exactly Hugging Face's logits processors, so decoding a converted model
gives ``generate``'s tokens. Greedy decoding and sampling apply them to the logits (before temperature,
top-k and top-p), beam search to the log-probabilities (which are not renormalised afterwards, as in
``generate``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenRules:
    """banned: token ids never generated; prefix: the first generated tokens, forced; eos_id and
    force_eos: at the last step allowed by the length limit only ``eos_id`` may be generated;
    no_repeat_ngram: no n-gram of this size occurs twice in a hypothesis (0 = off; the n-grams include the
    decoder's start token, as ``generate``'s do)."""

    banned: tuple[int, ...] = ()
    prefix: tuple[int, ...] = ()
    eos_id: int | None = None
    force_eos: bool = False
    no_repeat_ngram: int = 0

    def __post_init__(self) -> None:
        if self.no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0, got {self.no_repeat_ngram}")
        if self.force_eos and self.eos_id is None:
            raise ValueError("force_eos needs eos_id")

    @property
    def needs_history(self) -> bool:
        """Whether :meth:`apply` reads the tokens so far (callers build them only then)."""
        return self.no_repeat_ngram > 0

    def apply(self, scores: Tensor, step: int, last: bool, history: Tensor | None = None) -> Tensor:
        """scores [R, V] of generated token number ``step`` (0-based); last: the length limit allows no
        further token; history [R, t]: the decoder input so far (start token included), needed when
        :attr:`needs_history`. Returns the edited scores (a new tensor when anything changes)."""
        if self.banned:
            scores = scores.index_fill(-1, torch.tensor(self.banned, device=scores.device), float("-inf"))
        if self.no_repeat_ngram and history is not None:
            scores = _ban_repeats(scores, history, self.no_repeat_ngram)
        if step < len(self.prefix):
            return _force(scores, self.prefix[step])
        if last and self.force_eos:
            return _force(scores, self.eos_id)
        return scores


def _force(scores: Tensor, token: int) -> Tensor:
    """Every score -inf but ``token``'s, which becomes 0 (Hugging Face's forced BOS / EOS processors)."""
    out = torch.full_like(scores, float("-inf"))
    out[:, token] = 0.0
    return out


def _ban_repeats(scores: Tensor, history: Tensor, n: int) -> Tensor:
    """Ban each token that would complete an n-gram already present in its row's history [R, t]."""
    t = history.shape[1]
    if t < n:  # no complete n-gram yet
        return scores
    grams = history.unfold(1, n, 1)  # (R, t - n + 1, n): every n-gram so far
    tail = history[:, t - n + 1 :]  # (R, n - 1): what the next token would extend
    hit = (grams[:, :, :-1] == tail.unsqueeze(1)).all(-1)  # (R, t - n + 1)
    if not bool(hit.any()):
        return scores
    rows, pos = hit.nonzero(as_tuple=True)
    banned = torch.zeros_like(scores, dtype=torch.bool)
    banned[rows, grams[rows, pos, -1]] = True
    return scores.masked_fill(banned, float("-inf"))
