"""attnkit's Transformer as Hugging Face Marian (OPUS-MT): tiny random MarianMTModel directories saved with
save_pretrained, loaded with load_marian / open_run. Logits with padded batches (shared and separate
vocabularies, tied and untied outputs, Swish / ReLU / GELU), greedy and beam search token-identical to
``generate`` on Multi30k sentences of different lengths, the position-table layouts, save_marian round trips."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from _pretrained_mt import compare_with_generate, marian_dir, multi30k  # tests/_pretrained_mt.py
from attnkit.decoding.options import DecodeOptions
from attnkit.errors import CheckpointError
from attnkit.layers.embeddings import sinusoidal_table
from attnkit.models.hf.marian import load_marian, save_marian
from attnkit.tasks.runs import open_run

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):  # noqa: ANN201
    d = marian_dir(tmp_path_factory.mktemp("marian"))
    return transformers.MarianMTModel.from_pretrained(d).eval(), d


def _logits_match(hf, ours, vocab: int, pad: int) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    src = torch.randint(2, vocab - 1, (3, 11), generator=g)
    src[1, 7:], src[2, 2:] = pad, pad  # right padding, as both sides batch
    tgt = torch.randint(2, vocab - 1, (3, 8), generator=g)
    tgt[:, 0] = pad  # the decoder starts with the padding token
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=(src != pad).long(), decoder_input_ids=tgt).logits
        got = ours(src, tgt)
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_logits_equal_transformers(shared) -> None:
    hf, d = shared
    ours = load_marian(d)
    c = ours.config
    assert (c.sinusoid, c.activation, c.output_bias, c.share_embeddings, c.tie_output) == ("marian", "silu", True,
                                                                                            True, True)
    _logits_match(hf, ours, c.src_vocab_size, c.pad_id)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_separate_vocabularies_untied_output_other_activations(tmp_path, activation: str) -> None:
    d = marian_dir(tmp_path, separate=True, tie=False, activation=activation, layers=1)
    hf = transformers.MarianMTModel.from_pretrained(d).eval()
    ours = load_marian(d)
    assert not ours.config.share_embeddings and not ours.config.tie_output
    _logits_match(hf, ours, min(ours.config.src_vocab_size, ours.config.tgt_vocab_size), ours.config.pad_id)


def test_greedy_and_beam_equal_generate(shared) -> None:
    hf, d = shared
    translator = open_run(d).inference
    sentences = [s for s in multi30k("de", "val")[:40] if len(s.split()) <= 12][:10]
    lengths, budget = compare_with_generate(hf, translator, sentences)
    flat = [n for ns in lengths.values() for n in ns]
    # some hypotheses end with EOS, some at the length limit (where EOS is forced): both paths are compared
    assert min(flat) < 10 and max(flat) == budget - 1, lengths


def test_position_tables_match_transformers() -> None:
    hf = transformers.models.marian.modeling_marian.MarianSinusoidalPositionalEmbedding(50, 16)
    assert torch.equal(hf.create_weight(), sinusoidal_table(50, 16, "marian"))
    m2m = transformers.models.m2m_100.modeling_m2m_100.M2M100SinusoidalPositionalEmbedding
    assert torch.equal(m2m.get_embedding(52, 16, 1)[2:], sinusoidal_table(50, 16, "fairseq", start=2))
    assert torch.equal(sinusoidal_table(8, 6, "interleaved", start=3), sinusoidal_table(11, 6)[3:])


def test_save_marian_round_trip_and_transformers_reads_it(shared, tmp_path) -> None:
    _, d = shared
    ours = load_marian(d)
    save_marian(ours, tmp_path)
    back = load_marian(tmp_path)
    for (k, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    _logits_match(transformers.MarianMTModel.from_pretrained(tmp_path).eval(), back, ours.config.src_vocab_size,
                  ours.config.pad_id)


def test_checkpoint_variants_old_names_and_pickles(shared, tmp_path) -> None:
    """Old uploads: every tied name present, the position tables stored, pytorch_model.bin instead of
    safetensors (read with weights_only=True)."""
    hf, d = shared
    sd = load_file(str(d / "model.safetensors"))
    w = sd["model.shared.weight"]
    sd |= {"model.encoder.embed_tokens.weight": w, "model.decoder.embed_tokens.weight": w, "lm_head.weight": w,
           "model.encoder.embed_positions.weight": hf.model.encoder.embed_positions.weight.detach().clone(),
           "model.decoder.embed_positions.weight": hf.model.decoder.embed_positions.weight.detach().clone()}
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    torch.save(sd, tmp_path / "pytorch_model.bin")
    ours = load_marian(tmp_path)
    assert ours.config.sinusoid == "marian"
    _logits_match(hf, ours, ours.config.src_vocab_size, ours.config.pad_id)


def test_bad_checkpoints_name_the_problem(shared, tmp_path) -> None:
    _, d = shared
    cfg = json.loads((d / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "activation_function": "mish"}))
    with pytest.raises(CheckpointError, match="activation_function 'mish' is not supported"):
        load_marian(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 5}))
    save_file(load_file(str(d / "model.safetensors")), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        load_marian(tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        load_marian(tmp_path)


@pytest.mark.parametrize("beam", [1, 4])
def test_no_repeat_ngram_equals_generate(shared, beam: int) -> None:
    hf, d = shared
    translator = open_run(d).inference
    ids = translator.encode_sources(list(multi30k("de", "val")[200:206]))
    opts = DecodeOptions(beam_size=beam, no_repeat_ngram=2, max_len_b=12)
    ours = translator.translate_ids(ids, options=opts, max_tokens=10**6)
    s = max(map(len, ids))
    pad = translator.specials.pad
    x = torch.tensor([row + [pad] * (s - len(row)) for row in ids])
    out = hf.generate(input_ids=x, attention_mask=(x != pad).long(), num_beams=beam, no_repeat_ngram_size=2,
                      max_new_tokens=opts.budget(s, translator.max_len - 1), early_stopping=True, do_sample=False)
    theirs = [translator._strip(row) for row in out[:, 1:].tolist()]
    assert ours == theirs
