"""Beam search: beam 1 is greedy; against an exhaustive search on a toy model and a plain uncached beam
search on a Transformer; length penalty; batching; greedy and beam drop finished rows from the session."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attnkit.decoding import GenerationConfig, generate
from attnkit.decoding.beam import BeamConfig, beam_search
from attnkit.models.transformer import Transformer, TransformerConfig


class TableSession:
    """A toy session whose next-token log-probs depend only on the last token (a Markov chain)."""

    def __init__(self, table: torch.Tensor, batch: int) -> None:
        self.table = table  # [V, V] logits of the next token given the last one
        self.rows = torch.arange(batch)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]  # (B, t, V)

    def reorder(self, index: torch.Tensor) -> None:
        self.rows = self.rows[index]


def _exhaustive(table: torch.Tensor, start: int, eos: int, max_len: int, alpha: float) -> tuple[float, list[int]]:
    logp = torch.log_softmax(table.double(), -1)
    best = (-math.inf, [])
    v = table.shape[0]
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(v), repeat=n):
            if eos in seq[:-1] or (n < max_len and seq[-1] != eos):
                continue
            s, prev = 0.0, start
            for tok in seq:
                s += float(logp[prev, tok])
                prev = tok
            score = s / n**alpha
            if score > best[0]:
                best = (score, list(seq))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_wide_beam_finds_the_exhaustive_optimum(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v, eos, max_len = 4, 2, 4
    table = torch.randn(v, v, generator=g) * 2
    cfg = BeamConfig(beam_size=v**max_len, length_penalty=1.0, max_new_tokens=max_len, eos_id=eos)
    out = beam_search(TableSession(table, 1), torch.tensor([[1]]), cfg)
    score, seq = _exhaustive(table, 1, eos, max_len, 1.0)
    got = [t for t in out.tokens[0].tolist()][: len(seq)]
    assert got == seq
    assert abs(float(out.scores[0]) - score) < 1e-4


def test_beam_one_equals_greedy_on_a_transformer() -> None:
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny(src_vocab_size=30, tgt_vocab_size=30)).eval()
    src = torch.randint(4, 30, (5, 7))
    src[2, 4:] = 0
    bos = torch.full((5, 1), 1)
    greedy = generate(model.start_decoding(src), bos, GenerationConfig(max_new_tokens=10, stop_tokens=(2,)))
    beam = beam_search(model.start_decoding(src), bos, BeamConfig(beam_size=1, max_new_tokens=10, eos_id=2,
                                                                  length_penalty=0.6))
    assert torch.equal(beam.tokens, greedy)


def test_batched_beam_equals_one_by_one() -> None:
    torch.manual_seed(1)
    model = Transformer(TransformerConfig.tiny(src_vocab_size=30, tgt_vocab_size=30)).eval()
    # Make EOS likely so hypotheses finish at different times.
    with torch.no_grad():
        model.output.weight[2] += 0.3
    src = torch.randint(4, 30, (4, 6))
    src[1, 3:] = 0
    cfg = BeamConfig(beam_size=4, max_new_tokens=12, eos_id=2, length_penalty=0.8)
    batched = beam_search(model.start_decoding(src), torch.ones(4, 1, dtype=torch.long), cfg)
    for i in range(4):
        s = src[i : i + 1]
        s = s[:, : int((s != 0).sum())]
        one = beam_search(model.start_decoding(s), torch.ones(1, 1, dtype=torch.long), cfg)
        n = one.tokens.shape[1]
        assert batched.tokens[i, :n].tolist() == one.tokens[0].tolist()
        assert (batched.tokens[i, n:] == 0).all()
        assert abs(float(batched.scores[i]) - float(one.scores[0])) < 1e-4


def test_length_penalty_prefers_longer() -> None:
    # From BOS (1): EOS at once has log p ~ -0.9; token 3 then EOS has ~ -0.5 - 0.01.
    table = torch.full((4, 4), -30.0)
    table[1, 2], table[1, 3] = 0.0, 0.4  # p(EOS|BOS) ~ 0.40, p(3|BOS) ~ 0.60
    table[3, 2] = 10.0
    short = beam_search(TableSession(table, 1), torch.tensor([[1]]), BeamConfig(2, 0.0, 5, eos_id=2))
    assert short.tokens[0].tolist()[:2] == [3, 2]  # also best raw: -0.51 + ~0 > -0.91
    table[1, 2] = 0.45  # now EOS is slightly more likely than 3 at the first step
    raw = beam_search(TableSession(table, 1), torch.tensor([[1]]), BeamConfig(2, 0.0, 5, eos_id=2))
    assert raw.tokens[0].tolist() == [2]
    long = beam_search(TableSession(table, 1), torch.tensor([[1]]), BeamConfig(2, 1.0, 5, eos_id=2))
    assert long.tokens[0].tolist() == [3, 2]


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="beam_size"):
        BeamConfig(beam_size=0)


class EOSBiased:
    """A session whose EOS logit is raised by ``bias`` (so sentences finish at different steps); records the
    batch size of every reorder."""

    def __init__(self, session, bias: float, eos: int = 2) -> None:
        self.session, self.bias, self.eos, self.sizes = session, bias, eos, []

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.session.step(tokens)
        logits[..., self.eos] += self.bias
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        self.sizes.append(len(index))
        self.session.reorder(index)


def _plain_beam(model, src, k: int, max_new: int, eos: int, alpha: float, bias: float) -> tuple[float, list[int]]:
    """One sentence, no cache, no batching: every live hypothesis re-runs the whole model (the oracle)."""
    live, finished = [(0.0, [])], []
    for step in range(max_new):
        cands = []
        for s, toks in live:
            logits = model(src, torch.tensor([[1] + toks]))[0, -1]
            logits[eos] += bias
            logp = torch.log_softmax(logits.double(), -1).tolist()
            cands += [(s + lp, toks + [t]) for t, lp in enumerate(logp)]
        top = sorted(cands, key=lambda c: -c[0])[: 2 * k]
        for s, toks in top[:k]:
            if toks[-1] == eos and len(finished) < k:
                finished.append((s / (step + 1) ** alpha, toks))
        if len(finished) >= k:
            break
        live = [c for c in top if c[1][-1] != eos][:k]
        if step + 1 == max_new:
            finished += [(s / len(toks) ** alpha, toks) for s, toks in live]
    return max(finished, key=lambda h: h[0])


@pytest.mark.parametrize("seed", range(3))
def test_batched_cached_beam_equals_plain_oracle_and_drops_done_sentences(seed: int) -> None:
    torch.manual_seed(seed)
    model = Transformer(TransformerConfig.tiny(src_vocab_size=30, tgt_vocab_size=30)).eval()
    b, k = 5, 3
    src = torch.randint(4, 30, (b, 6))
    src[1, 3:] = 0
    session = EOSBiased(model.start_decoding(src), 1.0)
    cfg = BeamConfig(beam_size=k, max_new_tokens=10, eos_id=2, length_penalty=0.7)
    out = beam_search(session, torch.ones(b, 1, dtype=torch.long), cfg)
    with torch.no_grad():
        for i in range(b):
            s = src[i : i + 1, : int((src[i] != 0).sum())]
            score, toks = _plain_beam(model, s, k, 10, 2, 0.7, 1.0)
            assert out.tokens[i, : len(toks)].tolist() == toks
            assert (out.tokens[i, len(toks) :] == 0).all()
            assert abs(float(out.scores[i]) - score) < 1e-4
    assert b * k > min(session.sizes) > 0  # the rows of done sentences left the session


def test_greedy_drops_stopped_rows_and_equals_uncached_greedy() -> None:
    torch.manual_seed(1)
    model = Transformer(TransformerConfig.tiny(src_vocab_size=30, tgt_vocab_size=30)).eval()
    src = torch.randint(4, 30, (5, 6))
    src[3, 2:] = 0
    session = EOSBiased(model.start_decoding(src), 1.5)
    out = generate(session, torch.ones(5, 1, dtype=torch.long), GenerationConfig(10, stop_tokens=(2,), pad_id=0))
    with torch.no_grad():
        for i in range(5):
            seq = [1]
            s = src[i : i + 1, : int((src[i] != 0).sum())]
            while len(seq) <= 10 and seq[-1] != 2:
                logits = model(s, torch.tensor([seq]))[0, -1]
                logits[2] += 1.5
                seq.append(int(logits.argmax()))
            n = len(seq) - 1
            assert out[i, :n].tolist() == seq[1:] and (out[i, n:] == 0).all()
    # rows that stopped left the session while the others went on
    assert session.sizes and 0 < session.sizes[0] < 5 and out.shape[1] == 10
