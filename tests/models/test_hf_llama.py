"""attnkit's GPT against Hugging Face Llama (Llama-3 RoPE scaling, sharded safetensors), Qwen2 (q/k/v biases,
tied embeddings) and Mistral (a sliding window smaller than the prompt): tiny random models saved with
save_pretrained and loaded with load_llama. Logits with and without padding, greedy generation (left-padded
batches, past the window) token for token against ``generate``, cached vs recomputed decoding, the to_hf
round trip, and the chat template against ``apply_chat_template``."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from attnkit.decoding.generate import GenerationConfig, generate, left_pad
from attnkit.errors import CheckpointError, InputError
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.common import read_state_dict
from attnkit.models.hf.llama import config_from_hf, load_llama, save_llama
from attnkit.tasks.runs import open_run
from attnkit.tokenizers.chat import render_chat
from attnkit.tokenizers.pretrained import PretrainedTokenizer, load_pretrained_tokenizer

transformers.logging.set_verbosity_error()
V = 120
COMMON = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=96, initializer_range=0.3, rms_norm_eps=1e-5,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(tie_word_embeddings=True,
                                                                             rope_theta=1e6)),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(sliding_window=4,
                                                                                  num_key_value_heads=1)),
}


def hf_model(family: str) -> transformers.PreTrainedModel:
    config_cls, model_cls, over = FAMILIES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**COMMON, **over})).eval()
    with torch.no_grad():  # the init leaves biases at 0 and norms at 1: make them count
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request, tmp_path_factory):
    family = request.param
    hf = hf_model(family)
    d = tmp_path_factory.mktemp(family)
    hf.save_pretrained(d, max_shard_size="20KB" if family == "llama" else "50GB")
    return family, hf, load_llama(d)[0], d


def test_configs_map_the_family_options(pair) -> None:
    family, hf, ours, d = pair
    c = ours.config
    assert (c.norm, c.activation, c.positions) == ("rmsnorm", "swiglu", "rope")
    assert c.n_kv_heads == hf.config.num_key_value_heads
    assert c.qkv_bias is (True if family == "qwen2" else None) and c.bias is False
    assert c.tie_embeddings is (family == "qwen2")
    assert c.window == (4 if family == "mistral" else None)
    assert (c.rope_scaling or {}).get("kind") == ("llama3" if family == "llama" else None)
    if family == "llama":
        assert (d / "model.safetensors.index.json").is_file() and not (d / "model.safetensors").exists()


def test_logits_equal_hugging_face(pair) -> None:
    _, hf, ours, _ = pair
    idx = torch.randint(0, V, (3, 40))
    with torch.no_grad():
        expected, got = hf(idx).logits, ours(idx)
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_logits_with_padding_equal_hugging_face(pair) -> None:
    _, hf, ours, _ = pair
    idx = torch.randint(3, V, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[0, :6] = 0  # left padding
    mask[1, 13:] = 0  # right padding
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # what generate passes for padded prompts
    with torch.no_grad():
        expected = hf(idx, attention_mask=mask, position_ids=positions).logits
        got = ours(idx, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)


def _hf_generate(hf, ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    out = hf.generate(ids, attention_mask=mask.long(), max_new_tokens=n, do_sample=False, pad_token_id=0,
                      eos_token_id=None)
    return out[:, ids.shape[1] :]


def test_greedy_generation_equals_hugging_face_past_the_window(pair) -> None:
    _, hf, ours, _ = pair
    prompt = torch.randint(3, V, (2, 10))  # 10 > Mistral's window of 4; 40 tokens in all
    expected = _hf_generate(hf, prompt, torch.ones_like(prompt), 30)
    got = generate(ours.start_decoding(), prompt, GenerationConfig(max_new_tokens=30))
    assert len(set(expected[0].tolist())) > 3
    assert torch.equal(got, expected)


def test_left_padded_greedy_generation_equals_hugging_face(pair) -> None:
    _, hf, ours, _ = pair
    rows = [torch.randint(3, V, (n,)).tolist() for n in (11, 4, 7)]
    ids, mask = left_pad(rows, pad_id=0)
    expected = _hf_generate(hf, ids, mask, 20)
    got = generate(ours.start_decoding(prompt_mask=mask), ids, GenerationConfig(max_new_tokens=20))
    assert torch.equal(got, expected)


class Recompute:
    """Uncached decoding: every step runs the whole sequence so far."""

    def __init__(self, model: GPT) -> None:
        self.model, self.tokens = model, None

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens = tokens if self.tokens is None else torch.cat([self.tokens, tokens], 1)
        return self.model(self.tokens)[:, -tokens.shape[1] :]

    def reorder(self, index: torch.Tensor) -> None:
        self.tokens = self.tokens.index_select(0, index)


def test_cached_equals_uncached(pair) -> None:
    _, _, ours, _ = pair
    prompt = torch.randint(3, V, (2, 9))
    gen = GenerationConfig(max_new_tokens=25)
    assert torch.equal(generate(ours.start_decoding(), prompt, gen), generate(Recompute(ours), prompt, gen))


def test_to_hf_round_trip_is_exact(pair, tmp_path) -> None:
    family, hf, ours, d = pair
    save_llama(ours, tmp_path)
    original, written = read_state_dict(d), read_state_dict(tmp_path)
    assert set(written) == set(original) - {"lm_head.weight"} or set(written) == set(original)
    for k, v in written.items():
        assert torch.equal(v, original[k]), k
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back) is type(hf)
    idx = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        assert torch.equal(back(idx).logits, hf(idx).logits)
    assert config_from_hf(json.loads((tmp_path / "config.json").read_text())) == ours.config


def test_attnkit_trained_llama_exports_and_loads_in_transformers(tmp_path) -> None:
    torch.manual_seed(1)
    ours = GPT(GPTConfig.preset("llama-tiny", vocab_size=V, n_layers=2, d_model=32, d_ff=48,
                                tie_embeddings=False)).eval()
    save_llama(ours, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(hf, transformers.LlamaForCausalLM)
    idx = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-5, rtol=0)
    with pytest.raises(CheckpointError, match="only GPTs with rmsnorm"):
        save_llama(GPT(GPTConfig.tiny()), tmp_path / "gpt2")


def test_bad_directories_raise_checkpoint_errors(pair, tmp_path) -> None:
    family, _, _, d = pair
    cfg = json.loads((d / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "gelu"}))
    with pytest.raises(CheckpointError, match="hidden_act"):
        load_llama(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "yarn",
                                                                                "rope_theta": 1e4, "factor": 2}}))
    with pytest.raises(CheckpointError, match="RoPE type 'yarn'"):
        load_llama(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    sd = read_state_dict(d)
    del sd["model.layers.1.mlp.up_proj.weight"]
    from safetensors.torch import save_file
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.up_proj.weight"):
        load_llama(tmp_path)
    if family == "llama":  # a shard named by the index but absent
        (tmp_path / "model.safetensors").unlink()
        index = json.loads((d / "model.safetensors.index.json").read_text())
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(CheckpointError, match="is missing"):
            load_llama(tmp_path)


# ------------------------------------------------------------------------------------------ chat templates
CHATML = (
    "{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{%- endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{%- if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{% endgeneration %}"
    "{%- else %}{{ message['content'] }}{%- endif %}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)
LLAMA3 = (
    "{{- bos_token }}{%- set date_string = strftime_now('%d %b %Y') %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\nToday Date: ' + date_string + '\n\n' + system"
    " + '<|eot_id|>' }}"
    "{%- for message in messages %}{%- if message['role'] == 'tool' %}{{- message | tojson }}{% break %}{%- endif %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>"]
MESSAGES = [
    [{"role": "user", "content": "Hello there, how are you?"}],
    [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another, with ünïcödé?"}],
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4", "name": None},
     {"role": "user", "content": "And <|im_end|> as text?"}],
]


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["Hello there, how are you? Be brief. Name a colour. Blue, red and green; what is 2 + 2?"] * 30
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer=trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    return tok


@pytest.mark.parametrize("template", [CHATML, LLAMA3, MISTRAL], ids=["chatml", "llama3", "mistral"])
def test_chat_template_renders_as_apply_chat_template(template: str, tmp_path) -> None:
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(), bos_token="<s>",
                                                eos_token="</s>", unk_token="<unk>", chat_template=template)
    fast.save_pretrained(tmp_path)
    ours = load_pretrained_tokenizer(tmp_path)
    assert ours is not None and ours.chat_template == template
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for messages in MESSAGES:
        if template is MISTRAL and messages[0]["role"] == "system":
            with pytest.raises(InputError, match="roles must alternate"):
                ours.render_chat(messages)
            with pytest.raises(Exception, match="roles must alternate"):
                hf.apply_chat_template(messages, tokenize=False)
            continue
        for gen_prompt in (True, False):
            text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)
            assert ours.render_chat(messages, gen_prompt) == text
            expected = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen_prompt,
                                              return_dict=False)
            assert ours.encode_chat(messages, gen_prompt) == list(expected)
    assert ours.encode("Hello") == hf("Hello")["input_ids"]  # plain text: with the post-processor's BOS
    # The same template read from tokenizer_config.json (older checkpoints) and written back there.
    (tmp_path / "chat_template.jinja").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    assert load_pretrained_tokenizer(tmp_path).chat_template == template
    ours.save(tmp_path / "back")
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert again.apply_chat_template(MESSAGES[0], tokenize=False) == render_chat(template, MESSAGES[0],
                                                                                add_generation_prompt=False,
                                                                                special_tokens=ours.special_tokens)


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    """A Qwen2 directory with a trained tokenizer, <|im_end|> as its end-of-turn token."""
    tok = train_tokenizer()
    config_cls, model_cls, over = FAMILIES["qwen2"]
    torch.manual_seed(0)
    eos = tok.token_to_id("<|im_end|>")
    cfg = {**COMMON, **over, "vocab_size": tok.get_vocab_size(), "eos_token_id": eos}
    model = model_cls(config_cls(**cfg)).eval()
    d = tmp_path_factory.mktemp("qwen2-chat")
    model.save_pretrained(d)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>",
                                         chat_template=CHATML).save_pretrained(d)
    return d, model


def test_open_run_generates_and_chats_as_transformers(chat_dir) -> None:
    d, hf = chat_dir
    run = open_run(d)
    assert run.family == "gpt" and run.source == "huggingface" and run.can("chat")
    assert isinstance(run.tokenizer, PretrainedTokenizer) and run.tokenizer.stop_ids == (hf.config.eos_token_id,)
    hf_tok = transformers.AutoTokenizer.from_pretrained(d)
    messages = MESSAGES[1]
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = hf.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, ids["input_ids"].shape[1] :]
    reply = run.chat(messages, max_new_tokens=12, temperature=0.0)
    assert reply == hf_tok.decode(out)
    text = run.generate("Hello there", max_new_tokens=8, temperature=0.0)
    enc = hf_tok("Hello there", return_tensors="pt")
    out = hf.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=0)[0, enc["input_ids"].shape[1] :]
    assert text == "Hello there" + hf_tok.decode(out)
