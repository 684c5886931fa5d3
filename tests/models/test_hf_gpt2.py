"""attnkit's GPT against Hugging Face GPT-2: tiny random GPT2LMHeadModel checkpoints saved with
save_pretrained and loaded with load_gpt2 (logits, padding masks, greedy generation), save_gpt2 round trips,
the checkpoint variants found in the wild, the tokenizer files, and clear errors on bad directories."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import save_file

from attnkit.decoding.generate import GenerationConfig, generate, generate_text, left_pad
from attnkit.errors import CheckpointError
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.common import read_state_dict
from attnkit.models.hf.gpt2 import load_gpt2, save_gpt2
from attnkit.tokenizers.bytebpe import load_gpt2_tokenizer, train_bytebpe

transformers.logging.set_verbosity_error()
V = 101


def hf_model(**over) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, n_positions=48, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
               attn_pdrop=0.0, initializer_range=0.3, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**cfg, **over})).eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[transformers.GPT2LMHeadModel, GPT, object]:
    hf = hf_model()
    d = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(d)
    return hf, load_gpt2(d)[0], d


def test_logits_equal_hugging_face(pair) -> None:
    hf, ours, _ = pair
    idx = torch.randint(0, V, (3, 40))
    with torch.no_grad():
        expected, got = hf(idx).logits, ours(idx)
    assert expected.abs().max() > 1.0  # non-trivial logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_logits_with_padding_mask_equal_hugging_face(pair) -> None:
    hf, ours, _ = pair
    idx = torch.randint(1, V, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[0, :6] = 0  # left padding
    mask[1, 15:] = 0  # right padding
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # what HF generate passes for padded prompts
    with torch.no_grad():
        expected = hf(idx, attention_mask=mask, position_ids=positions).logits
        got = ours(idx, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)


def test_exact_gelu_checkpoint_loads_and_round_trips(tmp_path) -> None:
    """activation_function "gelu" (nanoGPT's exact GELU, the shakespeare-char preset) maps both ways."""
    hf = hf_model(activation_function="gelu")
    hf.save_pretrained(tmp_path / "hf")
    ours = load_gpt2(tmp_path / "hf")[0]
    assert ours.config.activation == "gelu"
    idx = torch.randint(0, V, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-4, rtol=0)
    save_gpt2(ours, tmp_path / "back")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    assert back.config.activation_function == "gelu"
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, hf(idx).logits, atol=1e-5, rtol=0)


def test_greedy_generation_equals_hugging_face(pair) -> None:
    hf, ours, _ = pair
    prompt = torch.randint(1, V, (2, 7))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=25, do_sample=False,
                           pad_token_id=0, eos_token_id=None)[:, 7:]
    got = generate(ours.start_decoding(), prompt, GenerationConfig(max_new_tokens=25))
    assert len(set(expected[0].tolist())) > 3
    assert torch.equal(got, expected)


def test_left_padded_greedy_generation_equals_hugging_face(pair) -> None:
    hf, ours, _ = pair
    rows = [torch.randint(1, V, (n,)).tolist() for n in (9, 4, 6)]
    ids, mask = left_pad(rows, pad_id=0)
    expected = hf.generate(ids, attention_mask=mask.long(), max_new_tokens=20, do_sample=False, pad_token_id=0,
                           eos_token_id=None)[:, ids.shape[1] :]
    got = generate(ours.start_decoding(prompt_mask=mask), ids, GenerationConfig(max_new_tokens=20))
    assert torch.equal(got, expected)


def test_save_gpt2_round_trip_is_exact_and_loads_in_transformers(pair, tmp_path) -> None:
    hf, ours, d = pair
    save_gpt2(ours, tmp_path)
    original, written = read_state_dict(d), read_state_dict(tmp_path)
    assert set(written) == set(original) - {"lm_head.weight"} or set(written) == set(original)
    for k, v in written.items():
        assert torch.equal(v, original[k]), k
    again = load_gpt2(tmp_path)[0]
    for (k, a), b in zip(ours.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        assert torch.equal(reloaded(idx).logits, hf(idx).logits)


@pytest.mark.parametrize("bias,tied", [(False, True), (True, False)])
def test_save_gpt2_of_attnkit_options(bias: bool, tied: bool, tmp_path) -> None:
    torch.manual_seed(1)
    ours = GPT(GPTConfig.tiny(vocab_size=V, bias=bias, tie_embeddings=tied)).eval()
    save_gpt2(ours, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-5, rtol=0)
    assert load_gpt2(tmp_path)[0].config.tie_embeddings == tied


def test_checkpoint_variants_bin_and_unprefixed_with_mask_buffers(pair, tmp_path) -> None:
    hf, ours, _ = pair
    sd = {k: v.clone() for k, v in hf.state_dict().items()}
    cfg = hf.config.to_dict()
    # pytorch_model.bin of a GPT2LMHeadModel
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text(json.dumps(cfg))
    torch.save(sd, tmp_path / "bin" / "pytorch_model.bin")
    # OpenAI's layout: GPT2Model names without "transformer.", with the old causal-mask buffers
    bare = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
    for i in range(2):
        bare[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 48, 48))
        bare[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text(json.dumps(cfg))
    save_file(bare, str(tmp_path / "bare" / "model.safetensors"))
    idx = torch.randint(0, V, (1, 16))
    with torch.no_grad():
        for sub in ("bin", "bare"):
            torch.testing.assert_close(load_gpt2(tmp_path / sub)[0](idx), ours(idx), atol=0, rtol=0)


def test_bad_directories_raise_checkpoint_errors(pair, tmp_path) -> None:
    _, _, d = pair
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_gpt2(tmp_path / "missing")[0]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not a GPT-2"):
        load_gpt2(tmp_path)[0]
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_gpt2(tmp_path)[0]
    sd = read_state_dict(d)
    del sd["transformer.h.1.mlp.c_fc.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="h.1.mlp.c_fc.weight"):
        load_gpt2(tmp_path)[0]
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        load_gpt2(tmp_path)[0]


def test_tokenizer_files_travel_with_the_checkpoint(tmp_path) -> None:
    texts = ["Hello world, hello there! Ünïcödé text and 日本語 too.\n"] * 20
    tok = train_bytebpe(texts, vocab_size=300)
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=tok.vocab_size))
    save_gpt2(model, tmp_path, tok)
    loaded, loaded_tok = load_gpt2(tmp_path)
    assert loaded_tok is not None and loaded_tok.encode(texts[0]) == tok.encode(texts[0])
    # GPT-2's classic files alone (vocab.json + merges.txt) give the same tokenizer, as transformers reads them
    (tmp_path / "tokenizer.json").unlink()
    classic = load_gpt2_tokenizer(tmp_path)
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    sample = "Hello there, Ünïcödé 日本語<|endoftext|>new"
    assert classic.encode(sample) == tok.encode(sample) == hf_tok(sample)["input_ids"]
    assert classic.eos_id == tok.eos_id == hf_tok.convert_tokens_to_ids("<|endoftext|>")
    out = generate_text(loaded, classic, ["Hello", "日本"], GenerationConfig(max_new_tokens=5))
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
