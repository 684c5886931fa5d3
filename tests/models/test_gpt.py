"""attnkit's GPT on its own: causality, padding, KV-cached decoding vs recomputation, left-padded batches
vs each prompt alone, the text API, configs, and overfitting one batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.decoding.generate import GenerationConfig, generate, generate_text, left_pad
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.tokenizers.char import train_char_tokenizer


def tiny(**over) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(**{"vocab_size": 50, **over})).eval()
    with torch.no_grad():  # larger weights than GPT-2's init, so that greedy tokens vary along a sequence
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


class RecomputeSession:
    """The uncached reference: every step runs the full forward over all tokens so far."""

    def __init__(self, model: GPT) -> None:
        self.model, self.tokens = model, None

    def step(self, tokens: Tensor) -> Tensor:
        self.tokens = tokens if self.tokens is None else torch.cat([self.tokens, tokens], 1)
        return self.model(self.tokens)[:, -tokens.shape[1] :]

    def reorder(self, index: Tensor) -> None:
        self.tokens = self.tokens.index_select(0, index)


def test_config_json_round_trip_and_presets(tmp_path) -> None:
    cfg = GPTConfig.preset("shakespeare-char", vocab_size=77, dropout=0.1)
    cfg.save(tmp_path / "c.json")
    assert GPTConfig.load(tmp_path / "c.json") == cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.max_len, cfg.vocab_size) == (4, 4, 128, 64, 77)
    with pytest.raises(ValueError, match="unknown GPT preset"):
        GPTConfig.preset("nope")
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(d_model=10, n_heads=3)


def test_gpt2_preset_has_gpt2_small_parameter_count() -> None:
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        ours = GPT(GPTConfig.gpt2())
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    n_hf = sum(p.numel() for p in hf.parameters())
    assert ours.num_parameters() == n_hf
    assert ours.lm_head.weight is ours.embed.tokens.weight


def test_uses_the_shared_blocks() -> None:
    from attnkit.attention.multihead import MultiHeadAttention
    from attnkit.layers.blocks import TransformerLayer

    model = tiny()
    assert all(isinstance(layer, TransformerLayer) and layer.norm_first for layer in model.layers)
    assert all(isinstance(layer.self_attn, MultiHeadAttention) for layer in model.layers)
    assert model.layers[0].ffn.activation == "gelu_tanh"
    assert GPT(GPTConfig.shakespeare_char()).layers[0].ffn.activation == "gelu"  # nanoGPT's nn.GELU()
    from attnkit.layers.linear import FastLinear

    assert isinstance(model.lm_head, FastLinear) and model.lm_head.weight is model.embed.tokens.weight
    exact = GPTConfig.shakespeare_char()
    assert GPTConfig.from_dict(exact.to_dict()) == exact and "activation" not in GPTConfig.tiny().to_dict()


def test_causal_future_tokens_do_not_change_past_logits() -> None:
    model = tiny()
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 50
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_rows_get_the_logits_they_get_alone(side: str) -> None:
    model = tiny()
    rows = [torch.randint(1, 50, (n,)) for n in (9, 5, 2)]
    t = 9
    idx = torch.zeros(3, t, dtype=torch.long)
    mask = torch.zeros(3, t, dtype=torch.bool)
    for i, r in enumerate(rows):
        sl = slice(t - len(r), t) if side == "left" else slice(0, len(r))
        idx[i, sl], mask[i, sl] = r, True
    with torch.no_grad():
        batched = model(idx, mask)
        for i, r in enumerate(rows):
            alone = model(r[None])[0]
            torch.testing.assert_close(batched[i][mask[i]], alone, atol=1e-5, rtol=1e-5)


def test_forward_rejects_bad_shapes() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must have"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 5))


@pytest.mark.parametrize(
    "gen",
    [
        GenerationConfig(max_new_tokens=20),
        GenerationConfig(max_new_tokens=20, temperature=1.0, seed=3),
        GenerationConfig(max_new_tokens=20, temperature=0.7, top_k=5, top_p=0.9, seed=4),
    ],
)
def test_cached_generation_equals_recomputation(gen: GenerationConfig) -> None:
    model = tiny()
    prompt = torch.randint(0, 50, (3, 6))
    cached = generate(model.start_decoding(), prompt, gen)
    uncached = generate(RecomputeSession(model), prompt, gen)
    assert cached.shape == (3, 20)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0].tolist())) > 2  # the check is not vacuous: tokens vary


def test_cache_is_preallocated_once() -> None:
    model = tiny()
    session = model.start_decoding(max_len=20)
    session.step(torch.randint(0, 50, (2, 4)))
    buffers = [c.self_attn.k.data_ptr() for c in session.caches]
    for _ in range(10):
        session.step(torch.randint(0, 50, (2, 1)))
    assert [c.self_attn.k.data_ptr() for c in session.caches] == buffers
    assert session.caches[0].self_attn.k.shape[2] == 20
    with pytest.raises(ValueError, match="cannot decode past"):
        session.step(torch.randint(0, 50, (2, 7)))


def test_left_padded_batch_generates_what_each_prompt_generates_alone() -> None:
    model = tiny()
    rows = [torch.randint(1, 50, (n,)).tolist() for n in (7, 3, 1, 5)]
    gen = GenerationConfig(max_new_tokens=15, stop_tokens=(7,), pad_id=0)
    ids, mask = left_pad(rows)
    batched = generate(model.start_decoding(prompt_mask=mask), ids, gen)
    for i, r in enumerate(rows):
        alone = generate(model.start_decoding(), torch.tensor([r]), gen)[0]
        n = alone.shape[0]
        assert torch.equal(batched[i, :n], alone)
        assert (batched[i, n:] == 0).all()  # after its stop token a row emits pad


def test_generate_text_api_and_windowing() -> None:
    text = "abcdefgh ijklmnop\n" * 3
    tok = train_char_tokenizer(text)
    model = tiny(vocab_size=tok.vocab_size)
    gen = GenerationConfig(max_new_tokens=12)
    out = generate_text(model, tok, ["abc", "h", "ghij"], gen)
    for prompt, got in zip(["abc", "h", "ghij"], out, strict=True):
        alone = generate(model.start_decoding(), torch.tensor([tok.encode(prompt)]), gen)[0].tolist()
        assert got == tok.decode(alone)
    # Past the context (32), generation continues in windows over the last half of the context.
    long = generate_text(model, tok, ["abc"], GenerationConfig(max_new_tokens=70), context=32)[0]
    assert len(tok.encode(long)) == 70
    assert long[:29] == generate_text(model, tok, ["abc"], GenerationConfig(max_new_tokens=29))[0]
    with pytest.raises(ValueError, match="longer than the context"):
        generate_text(model, tok, ["a" * 40], gen, context=32)


def test_generated_tokens_are_ordinary_tensors() -> None:
    model = tiny()
    new = generate(model.start_decoding(), torch.randint(0, 50, (1, 3)), GenerationConfig(max_new_tokens=4))
    model.train()
    model(new).sum().backward()  # inference tensors could not be saved for backward
    assert model.embed.tokens.weight.grad is not None


def test_dropout_only_in_training() -> None:
    model = tiny(dropout=0.5)
    idx = torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(idx), model(idx))
        model.train()
        assert not torch.allclose(model(idx), model(idx))


@pytest.mark.parametrize("bias", [True, False])
def test_overfits_one_batch(bias: bool) -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=20, bias=bias))
    x = torch.randint(0, 20, (4, 16))
    y = torch.roll(x, -1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = F.cross_entropy(model(x).reshape(-1, 20), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
