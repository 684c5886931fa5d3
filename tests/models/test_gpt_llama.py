"""GPT with the Llama lineage's arguments (RMSNorm, SwiGLU, RoPE, grouped KV heads, sliding window, q/k/v
biases, q/k norms): the configs (JSON of GPT-2-style configs unchanged, new fields written only when set),
causality and padding, KV-cached decoding vs recomputation (past the window too), left-padded batches vs
each prompt alone, attention weights for the viewer, cache sizes, and overfitting one batch."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.decoding.beam import BeamConfig, beam_search
from attnkit.decoding.generate import GenerationConfig, generate, left_pad
from attnkit.models.gpt import GPT, GPTConfig

LLAMA = dict(vocab_size=50, max_len=48, n_layers=2, n_heads=4, d_model=32, d_ff=48, bias=False,
             activation="swiglu", norm="rmsnorm", positions="rope", n_kv_heads=2, tie_embeddings=False)
VARIANTS = {
    "llama3": dict(rope_theta=500000.0, rope_scaling={"kind": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0, "original_max_len": 16}),
    "qwen2": dict(qkv_bias=True, tie_embeddings=True, rope_theta=1e6),
    "mistral": dict(window=5, n_kv_heads=1),
    "qwen3-gptj": dict(qk_norm=True, rope_interleaved=True, rope_scaling={"kind": "linear", "factor": 2.0}),
}


def model_of(variant: str, **over) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**LLAMA, **VARIANTS[variant], **over})).eval()
    with torch.no_grad():  # larger weights than the init, so that greedy tokens vary along a sequence
        for p in model.parameters():
            p.normal_(0, 0.3) if p.dim() == 2 else p.uniform_(0.5, 1.5)
    return model


class RecomputeSession:
    """The uncached reference: every step runs the full forward over all tokens so far."""

    def __init__(self, model: GPT, mask: Tensor | None = None) -> None:
        self.model, self.tokens, self.mask = model, None, mask

    def step(self, tokens: Tensor) -> Tensor:
        self.tokens = tokens if self.tokens is None else torch.cat([self.tokens, tokens], 1)
        if self.mask is not None and self.mask.shape[1] < self.tokens.shape[1]:
            grow = torch.ones(self.mask.shape[0], self.tokens.shape[1] - self.mask.shape[1], dtype=torch.bool)
            self.mask = torch.cat([self.mask, grow], 1)
        return self.model(self.tokens, self.mask)[:, -tokens.shape[1] :]

    def reorder(self, index: Tensor) -> None:
        self.tokens = self.tokens.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)


def test_gpt2_style_json_is_unchanged_and_new_fields_are_written_only_when_set(tmp_path) -> None:
    gpt2 = GPTConfig.tiny()
    assert set(gpt2.to_dict()) == {"vocab_size", "block_size", "n_layer", "n_head", "n_embd", "d_ff", "dropout",
                                   "bias", "tie_embeddings", "layer_norm_eps"}
    for variant in VARIANTS:
        cfg = GPTConfig(**{**LLAMA, **VARIANTS[variant]})
        cfg.save(tmp_path / "c.json")
        written = json.loads((tmp_path / "c.json").read_text())
        assert written["positions"] == "rope" and written["norm"] == "rmsnorm"
        assert "rope_interleaved" not in written or variant == "qwen3-gptj"
        assert GPTConfig.load(tmp_path / "c.json") == cfg
    for name in ("llama-tiny",):
        assert GPTConfig.preset(name).positions == "rope"
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        GPTConfig(**{**LLAMA, "n_kv_heads": 3})
    with pytest.raises(ValueError, match="bad rope_scaling"):
        GPTConfig(**{**LLAMA, "rope_scaling": {"kind": "linear"}})
    with pytest.raises(ValueError, match="norm must be"):
        GPTConfig(**{**LLAMA, "norm": "batch"})


def test_llama_tiny_has_the_parameter_count_of_shakespeare_char() -> None:
    llama = GPT(GPTConfig.preset("llama-tiny")).num_parameters()
    gpt = GPT(GPTConfig.preset("shakespeare-char")).num_parameters()
    assert abs(llama - gpt) / gpt < 0.02, (llama, gpt)
    model = GPT(GPTConfig.preset("llama-tiny"))
    assert not hasattr(model.embed, "position") and model.layers[0].self_attn.rope is not None
    assert model.layers[0].self_attn.k_proj.out_features == 64  # 2 KV heads of 32


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_and_padded_rows_get_the_logits_they_get_alone(variant: str) -> None:
    model = model_of(variant)
    x = torch.randint(0, 50, (2, 12))
    y = x.clone()
    y[:, 8:] = torch.randint(0, 50, (2, 4))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :8], model(y)[:, :8])
    rows = [torch.randint(1, 50, (n,)) for n in (11, 7, 3)]
    for side in ("left", "right"):
        idx = torch.zeros(3, 11, dtype=torch.long)
        mask = torch.zeros(3, 11, dtype=torch.bool)
        for i, r in enumerate(rows):
            sl = slice(11 - len(r), 11) if side == "left" else slice(0, len(r))
            idx[i, sl], mask[i, sl] = r, True
        with torch.no_grad():
            batched = model(idx, mask)
            for i, r in enumerate(rows):
                torch.testing.assert_close(batched[i][mask[i]], model(r[None])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_generation_equals_recomputation_with_left_padding_and_past_the_window(variant: str) -> None:
    model = model_of(variant)
    rows = [torch.randint(1, 50, (n,)).tolist() for n in (9, 4, 6)]
    ids, mask = left_pad(rows)
    gen = GenerationConfig(max_new_tokens=30)  # 39 tokens in all: far past the window of 5
    cached = generate(model.start_decoding(prompt_mask=mask), ids, gen)
    uncached = generate(RecomputeSession(model, mask), ids, gen)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0].tolist())) > 3  # not vacuous
    for i, r in enumerate(rows):  # each row generates what it generates alone
        assert torch.equal(cached[i], generate(model.start_decoding(), torch.tensor([r]), gen)[0])
    sampled = GenerationConfig(max_new_tokens=20, temperature=1.0, top_k=10, seed=3)
    assert torch.equal(generate(model.start_decoding(prompt_mask=mask), ids, sampled),
                       generate(RecomputeSession(model, mask), ids, sampled))


def test_beam_search_with_a_window_cache_equals_recomputation() -> None:
    """Beam search reorders the rows of the caches; with a window the rows hold only the last keys."""
    model = model_of("mistral")
    prompt = torch.randint(1, 50, (2, 6))
    cfg = BeamConfig(beam_size=3, max_new_tokens=20, eos_id=49)
    cached = beam_search(model.start_decoding(max_len=26), prompt, cfg)
    uncached = beam_search(RecomputeSession(model), prompt, cfg)
    assert torch.equal(cached.tokens, uncached.tokens)
    torch.testing.assert_close(cached.scores, uncached.scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", ["mistral", "llama3"])
def test_cache_holds_only_kv_heads_and_the_window(variant: str) -> None:
    model = model_of(variant)
    session = model.start_decoding(max_len=40)
    session.step(torch.randint(0, 50, (2, 7)))
    for _ in range(25):
        session.step(torch.randint(0, 50, (2, 1)))
    c = model.config
    cache = session.caches[0].self_attn
    full_numel = 2 * c.n_heads * 40 * c.head_dim  # a full-head cache of every position
    if c.window is None:
        assert cache.k.numel() * c.n_heads == full_numel * c.n_kv_heads
    else:
        assert cache.k.shape == (2, c.n_kv_heads, 2 * c.window, c.head_dim) and cache.start > 0


@pytest.mark.parametrize("variant", ["mistral", "qwen2"])
def test_attention_weights_for_the_viewer(variant: str) -> None:
    model = model_of(variant)
    idx = torch.randint(0, 50, (1, 9))
    with torch.no_grad():
        out = model.decode(idx, need_weights=True)
        hidden = model.decode(idx).hidden
    torch.testing.assert_close(out.hidden, hidden, atol=1e-5, rtol=1e-5)
    w = out.self_weights[0]
    assert w.shape == (1, 4, 9, 9) and torch.allclose(w.sum(-1), torch.ones(1, 4, 9))
    if model.config.window is not None:
        assert (w[..., 8, :4] == 0).all() and (w[..., 8, 4:] > 0).all()  # only the last 5 keys


def test_llama_tiny_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("llama-tiny", vocab_size=20, n_layers=2, d_model=32, d_ff=64, max_len=16))
    x = torch.randint(0, 20, (4, 16))
    y = torch.roll(x, -1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = F.cross_entropy(model(x).reshape(-1, 20), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
