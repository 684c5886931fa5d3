"""Beam search's stopping rules against Hugging Face ``generate``: ``early_stopping`` False (generate's
default heuristic) and "never" (the canonical bound) on a tiny random MarianMTModel (tests/_pretrained_mt.py),
num_beams 4, length penalties that favour short, neutral and long outputs, a batch of Multi30k sentences of
different lengths: token-identical best hypotheses and the same n-best scores."""

from __future__ import annotations

import pytest
import torch
import transformers

from _pretrained_mt import marian_dir, multi30k  # tests/_pretrained_mt.py
from attnkit.decoding.beam import BeamConfig, beam_search
from attnkit.decoding.options import DecodeOptions, decode
from attnkit.decoding.rules import TokenRules
from attnkit.models.hf.marian import load_marian

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


@pytest.fixture(scope="module")
def models(tmp_path_factory):  # noqa: ANN201
    d = marian_dir(tmp_path_factory.mktemp("marian"))
    tok = transformers.MarianTokenizer.from_pretrained(d)
    batch = tok(list(multi30k("de", "val")[300:308]), return_tensors="pt", padding=True)
    return transformers.MarianMTModel.from_pretrained(d).eval(), load_marian(d), batch["input_ids"], tok.pad_token_id


def _ours(model, src: torch.Tensor, pad: int, budget: int, alpha: float, stop: bool | str):  # noqa: ANN001, ANN202
    rules = TokenRules(banned=(pad,), eos_id=0, force_eos=True)  # the directory's bad_words_ids, forced_eos_token_id
    session = model.start_decoding(src, budget + 1)
    return beam_search(session, torch.full((src.shape[0], 1), pad), BeamConfig(4, alpha, budget, 0, pad, rules, stop))


@pytest.mark.parametrize("stop", [False, "never"])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_early_stopping_equals_generate(models, stop: bool | str, alpha: float) -> None:
    hf, ours, src, pad = models
    budget = src.shape[1] + 6
    with torch.no_grad():
        out = hf.generate(input_ids=src, attention_mask=(src != pad).long(), num_beams=4, num_return_sequences=4,
                          length_penalty=alpha, max_new_tokens=budget, early_stopping=stop, do_sample=False,
                          output_scores=True, return_dict_in_generate=True)
    theirs = [[t for t in row if t != pad] for row in out.sequences[:, 1:].tolist()]  # no start token, no padding
    got = _ours(ours, src, pad, budget, alpha, stop)
    assert [h[0][1] for h in got.hypotheses] == theirs[::4]
    scores = torch.tensor([[s for s, _ in h] for h in got.hypotheses])  # (B, 4): the n-best lists
    torch.testing.assert_close(scores.flatten(), out.sequences_scores.float(), atol=1e-4, rtol=0)
    assert [[t for _, t in h] for h in got.hypotheses] == [theirs[i:i + 4] for i in range(0, len(theirs), 4)]


def test_the_rules_differ_and_bad_values_are_refused(models) -> None:
    """The three rules give different outputs here (so the tests above can tell them apart)."""
    _, ours, src, pad = models
    budget = src.shape[1] + 6
    first = {stop: _ours(ours, src, pad, budget, 2.0, stop).tokens.tolist() for stop in (True, False, "never")}
    assert first[True] != first[False] and first[False] != first["never"]
    with pytest.raises(ValueError, match="early_stopping must be True, False or 'never'"):
        BeamConfig(early_stopping="sometimes")


@pytest.mark.parametrize("stop", [True, False, "never"])
def test_decode_options_pass_the_rule_on(models, stop: bool | str) -> None:
    """DecodeOptions (what the CLI's --early-stopping and the API build) decode as BeamConfig does."""
    _, ours, src, pad = models
    budget = src.shape[1] + 6
    rules = TokenRules(banned=(pad,), eos_id=0, force_eos=True)
    opts = DecodeOptions(beam_size=4, n_best=4, length_penalty=2.0, early_stopping=stop)
    got = decode(ours.start_decoding(src, budget + 1), torch.full((src.shape[0], 1), pad), budget, 0, pad, rules, opts)
    assert got == _ours(ours, src, pad, budget, 2.0, stop).hypotheses
    with pytest.raises(ValueError, match="early_stopping must be true, false or never"):
        DecodeOptions(beam_size=4, early_stopping="sometimes")
