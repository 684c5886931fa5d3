"""The decoding options every encoder-decoder offers (``attnkit translate run`` flags), and the one function
that decodes a batch with them: greedy, sampling or beam search, n-best lists with their scores, no repeated
n-grams, a length limit of a * source length + b, forced first target tokens.

    opts = DecodeOptions(beam_size=5, n_best=3, no_repeat_ngram=3, max_len_a=1.2, max_len_b=10)
    hyps = decode(session, start, opts.budget(src_len, model_max), eos, pad, rules, opts)
    hyps[i]   # [(score, tokens), ...] best first: n_best of them (one for greedy decoding and sampling)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from torch import Tensor

from attnkit.decoding.beam import BeamConfig, beam_search
from attnkit.decoding.generate import DecoderSession, GenerationConfig, generate
from attnkit.decoding.rules import TokenRules

Hypotheses = list[list[tuple[float, list[int]]]]  # per sentence: (score, tokens) best first


@dataclass(frozen=True)
class DecodeOptions:
    """beam_size, length_penalty: beam search (1 = greedy); n_best: how many finished hypotheses to return
    (<= beam_size; their scores are the length-normalised log-probabilities beam search ranks them by);
    sample, temperature, top_k, top_p, seed: sample instead (e.g. for back-translation; a seed makes it
    repeatable); no_repeat_ngram: no n-gram of this size twice in an output (0 = off); max_len_a,
    max_len_b: at most a * source length + b new tokens (fairseq's; the source length is the longest of
    the batch); prefix: forced first target tokens, after any the model forces itself; early_stopping:
    beam search's stopping rule (:class:`~attnkit.decoding.beam.BeamConfig`: True, False or "never", as
    ``generate``'s option of that name); compile: one-token steps compiled (the model's
    ``start_decoding(compile=True)``: the same outputs up to float rounding)."""

    beam_size: int = 1
    length_penalty: float = 1.0
    n_best: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    no_repeat_ngram: int = 0
    max_len_a: float = 1.0
    max_len_b: int = 50
    prefix: tuple[int, ...] = ()
    early_stopping: bool | str = True
    compile: bool = False

    def __post_init__(self) -> None:
        checks = [("beam_size", self.beam_size >= 1, ">= 1"), ("n_best", 1 <= self.n_best <= self.beam_size,
                                                              f"in [1, beam_size = {self.beam_size}]"),
                  ("temperature", self.temperature > 0 and math.isfinite(self.temperature), "> 0"),
                  ("no_repeat_ngram", self.no_repeat_ngram >= 0, ">= 0"),
                  ("max_len_a", self.max_len_a >= 0 and math.isfinite(self.max_len_a), ">= 0"),
                  ("max_len_b", self.max_len_b >= 0, ">= 0"),
                  ("length_penalty", math.isfinite(self.length_penalty), "a number"),
                  ("top_k", self.top_k is None or self.top_k >= 1, ">= 1"),
                  ("top_p", self.top_p is None or 0.0 < self.top_p <= 1.0, "in (0, 1]")]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)}")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise ValueError(f"early_stopping must be true, false or never, got {self.early_stopping!r}")
        if self.sample and self.beam_size > 1:
            raise ValueError("sampling draws one hypothesis per sentence: use beam_size 1 with sample")

    def budget(self, src_len: int, limit: int) -> int:
        """New tokens allowed for a batch whose longest source has ``src_len`` tokens (at most ``limit``,
        the model's; at least the forced prefix and one more)."""
        return max(min(limit, int(self.max_len_a * src_len + self.max_len_b)), min(limit, len(self.prefix) + 1))

    def rules(self, base: TokenRules) -> TokenRules:
        """``base`` (the model's banned / forced tokens) with these options' prefix and n-gram ban."""
        return replace(base, prefix=base.prefix + self.prefix, no_repeat_ngram=self.no_repeat_ngram)


def decode(session: DecoderSession, start: Tensor, budget: int, eos_id: int, pad_id: int, rules: TokenRules,
           opts: DecodeOptions) -> Hypotheses:
    """Decode one batch (start [B, 1]: the decoder's start token) under ``opts``; per sentence its
    hypotheses (score, tokens with EOS when emitted) best first, ``opts.n_best`` of them. Greedy decoding and
    sampling have one hypothesis, scored nan (they rank nothing)."""
    rules = opts.rules(rules)
    if opts.beam_size == 1 and opts.n_best == 1:
        cfg = GenerationConfig(budget, temperature=opts.temperature if opts.sample else 0.0, top_k=opts.top_k,
                               top_p=opts.top_p, stop_tokens=(eos_id,), pad_id=pad_id, seed=opts.seed, rules=rules)
        return [[(math.nan, row)] for row in generate(session, start, cfg).tolist()]
    out = beam_search(session, start, BeamConfig(opts.beam_size, opts.length_penalty, budget, eos_id, pad_id,
                                                 rules=rules, early_stopping=opts.early_stopping))
    return [h[: opts.n_best] for h in out.hypotheses]
