"""Compiled one-token decoding steps (GPTSession(compile=True)) against the eager session they replace:
the same logits step by step, the same tokens, after the weights change in place or by load_state_dict,
batched (left padding) and alone; the static cache; the oneDNN operator the compiled code calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.attention.cache import CAPACITY_STEP, KVCache, StaticKVCache, static_capacity
from attnkit.decoding.generate import GenerationConfig, generate, left_pad
from attnkit.kernels import fp32_kernel, onednn_linear
from attnkit.models.gpt import GPT, GPTConfig

PROMPTS = [[5, 9, 3, 7, 1], [8, 2], [4, 4, 6]]
NEW = 12


def _model(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.tiny(**overrides)).eval()


def _stepwise_logits(model: GPT, compile: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Greedy decoding by hand: the logits [B, V] of every step and the tokens [B, NEW]."""
    ids, mask = left_pad(PROMPTS)
    with torch.inference_mode():
        session = model.start_decoding(prompt_mask=mask, max_len=ids.shape[1] + NEW, compile=compile)
        logits = session.step_last(ids)
        steps, tokens = [logits], []
        for _ in range(NEW - 1):
            token = logits.argmax(-1)
            tokens.append(token)
            logits = session.step_last(token[:, None])
            steps.append(logits)
        tokens.append(logits.argmax(-1))
    return steps, torch.stack(tokens, 1)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_compiled_steps_equal_the_eager_steps(kind: str) -> None:
    """GPT-2's layout, and the Llama lineage's (RoPE, grouped K/V heads, RMSNorm, SwiGLU)."""
    torch.manual_seed(0)
    from torch._dynamo.utils import counters  # (torch is pinned: its compile statistics)

    model = (GPT(GPTConfig.llama_tiny(vocab_size=256, max_len=32)).eval() if kind == "llama" else _model())
    eager, eager_tokens = _stepwise_logits(model, compile=False)
    counters.clear()
    fast, fast_tokens = _stepwise_logits(model, compile=True)
    assert not counters["graph_break"]  # the whole step is one compiled graph
    for a, b in zip(eager, fast, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast_tokens, eager_tokens)
    # Batched == alone: each prompt by itself (another batch size: compiled again) gives its row.
    for i, prompt in enumerate(PROMPTS[:1]):
        with torch.inference_mode():
            session = model.start_decoding(max_len=len(prompt) + NEW, compile=True)
            alone = generate(session, torch.tensor([prompt]), GenerationConfig(NEW))
        assert torch.equal(alone[0], eager_tokens[i])


def test_compiled_steps_follow_the_weights() -> None:
    """The weights are inputs of the compiled code: an optimizer step, then load_state_dict, both seen."""
    model = _model()
    _stepwise_logits(model, compile=True)  # compiled with the first weights
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids, _ = left_pad(PROMPTS)
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    opt.step()
    model.eval()
    eager, tokens = _stepwise_logits(model, compile=False)
    fast, fast_tokens = _stepwise_logits(model, compile=True)
    for a, b in zip(eager, fast, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.load_state_dict(other.state_dict())
    eager, tokens = _stepwise_logits(model, compile=False)
    fast, fast_tokens = _stepwise_logits(model, compile=True)
    torch.testing.assert_close(fast[-1], eager[-1], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast_tokens, tokens)


def test_compiled_session_keeps_its_rows_and_its_bounds() -> None:
    model = _model()
    with torch.inference_mode():
        session = model.start_decoding(max_len=7, compile=True)
        assert session.fixed_rows  # generate does not drop finished rows (the shapes stay)
        session.step_last(torch.tensor([[1, 2, 3, 4, 5]]))
        session.step_last(torch.tensor([[6]]))
        with pytest.raises(ValueError, match="a compiled session takes one token per step_last"):
            session.step(torch.tensor([[7]]))
        session.step_last(torch.tensor([[7]]))
        with pytest.raises(ValueError, match="cannot decode past 7 tokens"):
            session.step_last(torch.tensor([[8]]))
    windowed = GPT(GPTConfig.tiny(window=4)).eval()
    assert not windowed.start_decoding(max_len=8, compile=True).compile  # runs uncompiled


def test_static_cache_holds_the_prompt_and_writes_by_position() -> None:
    cache = KVCache(40)
    k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    cache.append(k, v)
    at = torch.tensor([5])
    static = StaticKVCache.holding(cache, static_capacity(40, 1024), at)
    assert static.k.shape == (2, 3, CAPACITY_STEP, 4)
    assert torch.equal(static.k[:, :, :5], k) and not static.k[:, :, 5:].any()  # zeros, never garbage
    k1, v1 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    keys, values = static.append(k1, v1)
    assert keys.shape[2] == CAPACITY_STEP and torch.equal(keys[:, :, 5:6], k1) and torch.equal(values[:, :, 5:6], v1)
    static.reorder(torch.tensor([1, 1]))
    assert torch.equal(static.k[0, :, :5], k[1])
    assert static_capacity(64, 1024) == 64 and static_capacity(65, 100) == 100 and static_capacity(130, 100) == 130


def test_onednn_operator_equals_float64_math() -> None:
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 7, 48), torch.randn(80, 48), torch.randn(80)
    ref = (x.double() @ w.double().T + b.double()).float()
    out = torch.ops.attnkit.onednn_linear(x, w, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.ops.attnkit.onednn_linear(x, w, None), onednn_linear(x, w))
    assert fp32_kernel() in ("mkl", "onednn")


def _translation_model(**kw):
    from attnkit.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    return Transformer(TransformerConfig.tiny(src_vocab_size=40, tgt_vocab_size=40, max_len=48, **kw)).eval()


@pytest.mark.parametrize("beam", [1, 4])
def test_compiled_translation_steps_equal_the_eager_ones(beam: int) -> None:
    """Encoder-decoder: greedy (generate) and beam search, padded sources of different lengths."""
    from attnkit.decoding.beam import BeamConfig, beam_search

    model = _translation_model()
    g = torch.Generator().manual_seed(3)
    src = torch.randint(3, 40, (3, 9), generator=g)
    src[1, 6:] = 0  # padding (pad_id 0)
    src[2, 4:] = 0
    bos = torch.full((3, 1), model.config.bos_id)
    out = {}
    for compile in (False, True):
        session = model.start_decoding(src, 20, compile=compile)
        if beam == 1:
            out[compile] = generate(session, bos, GenerationConfig(19, stop_tokens=(model.config.eos_id,)))
        else:
            res = beam_search(session, bos, BeamConfig(beam_size=beam, max_new_tokens=19, eos_id=model.config.eos_id))
            out[compile] = (res.tokens, res.scores)
        assert (session._static is not None) == compile  # the compiled steps ran
    tokens = out[False] if beam == 1 else out[False][0]
    assert tokens.shape[1] > 5  # (random weights: long outputs, many compiled steps)
    if beam == 1:
        assert torch.equal(out[True], out[False])
    else:
        assert torch.equal(out[True][0], out[False][0])
        torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_compiled_steps_of_a_quantized_model(mode: str) -> None:
    """int8 (its product is the operator attnkit::int8_linear in the compiled code) and bf16 weights: the
    compiled steps give the eager quantized steps' logits (up to the rounding of a fused step, which may move
    an activation to the next int8 step: bounded by a small fraction of the logits' range)."""
    import copy

    from attnkit.layers.quant import quantize

    model = quantize(copy.deepcopy(_model()), mode)
    eager, _ = _stepwise_logits(model, compile=False)
    fast, _ = _stepwise_logits(model, compile=True)
    for a, b in zip(eager, fast, strict=True):
        assert float((a - b).abs().max()) <= 2e-2 * float(a.abs().max())
