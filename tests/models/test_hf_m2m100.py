"""attnkit's Transformer as Hugging Face M2M-100 and NLLB-200 (M2M100ForConditionalGeneration): pre-norm
layers with final norms, fairseq's sinusoidal positions numbered from padding_idx + 1, scaled embeddings.
Logits with padded batches equal transformers'; greedy and beam search, with the target language as the
forced first token, token-identical to ``generate`` on Multi30k sentences of different lengths."""

from __future__ import annotations

import pytest
import torch
import transformers

from _pretrained_mt import compare_with_generate, m2m100_dir, multi30k, nllb_dir  # tests/_pretrained_mt.py
from attnkit.models.hf.m2m100 import load_m2m100
from attnkit.tasks.runs import open_run


@pytest.fixture(scope="module", params=["m2m100", "nllb"])
def pair(request, tmp_path_factory):  # noqa: ANN201
    make = m2m100_dir if request.param == "m2m100" else nllb_dir
    d = make(tmp_path_factory.mktemp(request.param))
    langs = ("de", "en") if request.param == "m2m100" else ("deu_Latn", "eng_Latn")
    return transformers.M2M100ForConditionalGeneration.from_pretrained(d).eval(), d, langs


def test_logits_equal_transformers(pair) -> None:
    hf, d, _ = pair
    ours = load_m2m100(d)
    c = ours.config
    assert (c.norm_first, c.final_norm, c.sinusoid, c.position_start) == (True, True, "fairseq", c.pad_id + 1)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, c.src_vocab_size, (3, 12), generator=g)
    src[1, 8:], src[2, 3:] = c.pad_id, c.pad_id
    tgt = torch.randint(3, c.src_vocab_size, (3, 9), generator=g)
    tgt[:, 0] = c.bos_id  # M2M-100 starts decoding with EOS
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=(src != c.pad_id).long(), decoder_input_ids=tgt).logits
        got = ours(src, tgt)
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_greedy_and_beam_with_forced_language_equal_generate(pair) -> None:
    hf, d, (src_lang, tgt_lang) = pair
    translator = open_run(d).inference
    sentences = [s for s in multi30k("de", "val")[40:90] if len(s.split()) <= 12][:10]
    lengths, budget = compare_with_generate(hf, translator, sentences, src_lang=src_lang, tgt_lang=tgt_lang)
    flat = [n for ns in lengths.values() for n in ns]
    assert min(flat) < 10 and max(flat) == budget - 1, lengths  # ended by EOS and at the length limit
    out = open_run(d).translate(sentences[:2], src_lang=src_lang, tgt_lang=tgt_lang)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
