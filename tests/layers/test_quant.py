"""Quantized and low-precision inference (attnkit.layers.quant): each layer against its float reference
with an error bound derived from the quantization step, whole tiny models against fp32, the automatic
choice with faked hardware, and the safetensors round trip."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.attention.fast import StackedProjections
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.decoding import GenerationConfig, generate
from attnkit.layers import quant
from attnkit.layers.linear import FastLinear
from attnkit.layers.quant import (
    BF16Linear,
    Capabilities,
    Int8Linear,
    OneDNNLinear,
    QuantEmbedding,
    QuantizedStack,
    load_quantized,
    onednn_fp32,
    pick_dtype,
    quantize,
    quantize_activations,
    quantize_rows,
    save_quantized,
    weight_bytes,
)
from attnkit.models.bert import BERT, BERTConfig
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.transformer import Transformer, TransformerConfig

BF16_U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)


def _linear(d_in: int = 48, d_out: int = 40, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(d_in, d_out, bias=bias)
    with torch.no_grad():
        lin.weight[3] *= 20  # one row with a much larger range: per-row scales must keep the others exact
    return lin


def _int8_bound(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """|y_int8 - y| <= (s_x/2) sum|w| + (s_w/2) sum|x| + K s_x s_w / 4 per element, from |x - s_x p| <= s_x/2
    and |w - s_w q| <= s_w/2; plus fp32 rounding of the scaled result."""
    w = lin.weight.detach().double()
    sx = x.double().abs().amax(-1, keepdim=True) / 127  # (M, 1)
    sw = w.abs().amax(-1) / 127  # (N,)
    k = x.shape[-1]
    bound = sx / 2 * w.abs().sum(-1) + sw / 2 * x.double().abs().sum(-1, keepdim=True) + k * sx * sw / 4
    return bound + 1e-5 * (x.double().abs() @ w.abs().t() + 1)


def test_quantize_rows_is_within_half_a_step_and_keeps_zero_rows() -> None:
    w = torch.randn(6, 10)
    w[2] = 0
    q, s = quantize_rows(w)
    assert q.dtype == torch.int8 and s.shape == (6,)
    assert int(q.abs().max()) <= 127 and torch.equal(q[2], torch.zeros(10, dtype=torch.int8))
    assert bool(((w - s[:, None] * q.float()).abs() <= s[:, None] / 2 + 1e-7).all())


def test_activation_quantization_rounds_to_nearest_per_row() -> None:
    x = torch.randn(5, 33) * torch.tensor([1e-3, 1.0, 30.0, 0.0, 2.0])[:, None]
    xq, amax = quantize_activations(x)
    p = xq.int() - 128
    assert xq.dtype == torch.uint8 and int(p.abs().max()) <= 127
    assert torch.equal(p[3], torch.zeros(33, dtype=torch.int32))  # a zero row stays zero
    real = x / amax * 127
    assert bool(((real - p).abs() <= 0.5 + 1e-4).all())


def _weight_only_bound(x: torch.Tensor, q: Int8Linear) -> torch.Tensor:
    """bf16(x) times the int8 rows, rounded to bf16, then scaled: |err| <= (s_w/2) sum|x| (weights) +
    2u(1+u) sum|x||w~| (x and the product rounded to bf16), w~ = s_w q the dequantized weight."""
    w = q.dequantized().double()
    sw = q.scale.double()
    return sw / 2 * x.double().abs().sum(-1, keepdim=True) + 2 * BF16_U * (1 + BF16_U) * (
        x.double().abs() @ w.abs().t()) + 1e-5


@pytest.mark.parametrize("kernel", ["onednn", "int_mm", "weight_only"])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_is_within_the_quantization_bound(kernel: str, bias: bool) -> None:
    if kernel == "onednn" and not quant._onednn_int8():
        pytest.skip("oneDNN's int8 kernel is used only with VNNI or AMX (without them its products saturate)")
    if kernel == "weight_only" and not quant._native_bf16():
        pytest.skip("the weight-only kernel runs in bf16: this CPU has no native bf16")
    lin = _linear(bias=bias)
    q = Int8Linear.from_parts(*quantize_rows(lin.weight), lin.bias)
    q.kernel = kernel
    x = torch.randn(2, 7, 48)
    x[0, 2] = 0  # a zero row
    x[1, 3] *= 100  # a row with a large range
    with torch.no_grad():
        got, ref = q(x).double(), F.linear(x.double(), lin.weight.double(), None if lin.bias is None else
                                            lin.bias.double())
    assert got.shape == (2, 7, 40)
    err = (got - ref).reshape(-1, 40)
    rows = x.reshape(-1, 48)
    bound = _weight_only_bound(rows, q) if kernel == "weight_only" else _int8_bound(rows, lin)
    assert bool((err.abs() <= bound).all())
    assert torch.equal(q.dequantized(), q.scale[:, None] * q.qweight.float())
    assert q(torch.zeros(0, 48)).shape == (0, 40)


def test_int8_linear_picks_its_kernel_by_size() -> None:
    q = Int8Linear.from_parts(*quantize_rows(torch.randn(64, 48)), None)
    small, large = q._choose(1), q._choose(10**6)
    assert large == ("onednn" if quant._onednn_int8() else "int_mm")
    assert small == ("weight_only" if quant._native_bf16() else large)
    odd = Int8Linear.from_parts(*quantize_rows(torch.randn(64, 40)), None)  # width not a multiple of 16
    assert odd._choose(1) == large


def test_int8_linear_keeps_one_packed_weight_per_kernel_and_sees_new_weights() -> None:
    """A prompt (many rows) then one-row steps then a prompt again: each kernel's packed weight is made once
    (re-packing at every switch was most of int8 generation's overhead), and results equal each kernel
    alone; loading new weights (load_state_dict writes the buffers in place) is seen by every kernel."""
    lin = _linear(d_in=64, d_out=40)
    q = Int8Linear.from_parts(*quantize_rows(lin.weight), lin.bias)
    big, one = torch.randn(40, 64), torch.randn(1, 64)
    with torch.no_grad():
        first = q(big), q(one)
        packed = {k: id(v) for k, v in quant._DERIVED[id(q.qweight)][2].items()}
        again = q(big), q(one)
        assert {k: id(v) for k, v in quant._DERIVED[id(q.qweight)][2].items()} == packed
        assert len(packed) == (2 if quant._native_bf16() else 1)
        for x, got in zip((big, one), again, strict=True):
            alone = Int8Linear.from_parts(q.qweight.clone(), q.scale.clone(), q.bias)
            assert torch.equal(got, alone(x)) and torch.equal(got, first[0 if x is big else 1])
        other = Int8Linear.from_parts(*quantize_rows(torch.randn(40, 64)), torch.randn(40))
        q.load_state_dict(other.state_dict())
        assert torch.equal(q(big), other(big)) and torch.equal(q(one), other(one))
    key = id(q.qweight)
    del q, again, alone  # the derived weights go with their int8 weight
    assert key not in quant._DERIVED


def test_bf16_linear_is_within_bf16_rounding() -> None:
    lin = _linear()
    q = BF16Linear(lin.weight.detach().bfloat16(), lin.bias)
    x = torch.randn(9, 48)
    with torch.no_grad():
        got = q(x).double()
        ref = F.linear(x.double(), lin.weight.double(), lin.bias.double())
        mag = x.double().abs() @ lin.weight.double().abs().t() + lin.bias.double().abs()
    # inputs and weights rounded to bf16 (2u), the bias (u), the bf16 output (u |y|), fp32 accumulation
    bound = (2 * BF16_U + BF16_U**2) * mag + BF16_U * (ref.abs() + 2 * BF16_U * mag) + 1e-6
    assert got.dtype == torch.float64 and bool(((got - ref).abs() <= bound).all())


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this PyTorch build")
@pytest.mark.parametrize("path", ["onednn", "mkl"])
def test_onednn_fp32_linear_equals_f_linear_up_to_rounding(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant, "MKL_MAX_MACS", -1 if path == "onednn" else 10**9)
    lin = _linear()
    q = OneDNNLinear(lin.weight, lin.bias)
    for shape in ((1, 48), (3, 5, 48), (0, 48)):
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(q(x), lin(x), rtol=1e-5, atol=1e-5)
    model = GPT(GPTConfig.tiny()).eval()
    fast = onednn_fp32(copy.deepcopy(model))
    assert not [m for m in fast.modules() if isinstance(m, nn.Linear)]
    idx = torch.randint(0, 256, (2, 16))
    with torch.inference_mode():
        torch.testing.assert_close(fast(idx), model(idx), rtol=1e-4, atol=1e-5)
    assert torch.equal(generate(fast.start_decoding(None, 30), idx, GenerationConfig(8)),
                       generate(model.start_decoding(None, 30), idx, GenerationConfig(8)))


def test_quantized_embedding_rows_and_padding() -> None:
    emb = nn.Embedding(30, 12, padding_idx=0)
    for mode in ("int8", "bf16"):
        model = quantize(nn.Sequential(copy.deepcopy(emb)), mode)
        q = model[0]
        assert isinstance(q, QuantEmbedding)
        ids = torch.tensor([[0, 5, 29], [7, 7, 1]])
        got = q(ids)
        assert torch.equal(got, q.weight[ids]) and torch.equal(got[0, 0], torch.zeros(12))
        step = emb.weight.detach().abs().amax(1, keepdim=True) / 127 if mode == "int8" else None
        err = (q.weight - emb.weight.detach()).abs()
        assert bool((err <= (step / 2 + 1e-7 if mode == "int8" else BF16_U * emb.weight.detach().abs())).all())


def _assert_only_low_precision_products(model: nn.Module) -> None:
    assert not [m for m in model.modules() if isinstance(m, nn.Linear | nn.Embedding | FastLinear)]
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            assert isinstance(m._stacked, QuantizedStack)


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_stacked_projections_equal_the_separate_ones(mode: str) -> None:
    mha = MultiHeadAttention(32, 4)
    assert isinstance(mha._stacked, StackedProjections)
    quantize(mha, mode)
    _assert_only_low_precision_products(mha)
    x = torch.randn(4, 20, 32)  # 80 tokens: forward takes the stacked path (>= STACK_MIN_TOKENS)
    with torch.inference_mode():
        stacked = mha._stacked(x, (mha.q_proj, mha.k_proj, mha.v_proj))
        separate = (mha.q_proj(x), mha.k_proj(x), mha.v_proj(x))
        for a, b in zip(stacked, separate, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        mha(x)  # the whole module runs through it


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(0, -2).double(), b.flatten(0, -2).double(), dim=-1)


# Measured on these tiny random models over seeds 0-4: min cosine to fp32 (per position) int8 0.9997-0.9999,
# bf16 0.99995-0.99999; arg-max agreement with fp32 94-100% (random logits have near ties). The bounds
# leave room for other seeds.
MIN_COSINE = {"int8": 0.999, "bf16": 0.9999}
# "int8" with the small-product rule (these tiny models: the weight-only kernel) and with every product
# through the int8 x int8 kernel ("int8-a8w8", the large-product path).
MODES = ["int8", "int8-a8w8", "bf16"]


def _quantize(model: nn.Module, mode: str, monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    if mode == "int8-a8w8":
        monkeypatch.setattr(quant, "WEIGHT_ONLY_MAX_MACS", -1)
    return quantize(model, mode.split("-")[0])


@pytest.mark.parametrize("mode", MODES)
def test_tiny_gpt_quantized_is_close_and_decodes_as_it_scores(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = GPT(GPTConfig.tiny()).eval()
    q = _quantize(copy.deepcopy(model), mode, monkeypatch)
    _assert_only_low_precision_products(q)
    table = q.lm_head.weight if mode == "bf16" else q.lm_head.qweight
    assert table is q.embed.tokens.table
    idx = torch.randint(0, 256, (3, 24))
    with torch.inference_mode():
        ref, got = model(idx), q(idx)
    assert float(_cosines(got, ref).min()) >= MIN_COSINE[mode.split("-")[0]]
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    assert agree >= 0.9, f"{mode} next-token agreement with fp32 {agree:.1%}"
    # Cached one-token steps (the FastLinear path of fp32, bypassed here) give what the full forward gives.
    prompt = idx[:, :8]
    out = generate(q.start_decoding(None, 20), prompt, GenerationConfig(12))
    with torch.inference_mode():
        full = q(torch.cat([prompt, out[:, :-1]], 1))[:, 7:].argmax(-1)
    assert torch.equal(out, full)


@pytest.mark.parametrize("mode", MODES)
def test_tiny_transformer_and_bert_quantized_are_close(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tr = Transformer(TransformerConfig.tiny(src_vocab_size=60, tgt_vocab_size=60)).eval()
    src, tgt = torch.randint(3, 60, (4, 11)), torch.randint(3, 60, (4, 9))
    src[1, 7:] = 0  # padding
    qt = _quantize(copy.deepcopy(tr), mode, monkeypatch)
    _assert_only_low_precision_products(qt)
    assert qt.src_embed is qt.tgt_embed  # shared embeddings stay one module
    bert = BERT(BERTConfig.tiny()).eval()
    ids = torch.randint(5, 100, (3, 13))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    qb = _quantize(copy.deepcopy(bert), mode, monkeypatch)
    with torch.inference_mode():
        tl, ql = tr(src, tgt), qt(src, tgt)
        bh, qh = bert(ids, mask).hidden, qb(ids, mask).hidden
    floor = MIN_COSINE[mode.split("-")[0]]
    assert float(_cosines(ql, tl).min()) >= floor
    assert float(_cosines(qh[mask.bool()], bh[mask.bool()]).min()) >= floor
    assert float((ql.argmax(-1) == tl.argmax(-1)).float().mean()) >= 0.9


def test_fp32_is_the_model_itself() -> None:
    model = GPT(GPTConfig.tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert quantize(model, "fp32") is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, FastLinear) for m in model.modules())
    with pytest.raises(ValueError, match="dtype"):
        quantize(model, "int4")
    with pytest.raises(ValueError, match="CPU only"):
        quantize(GPT(GPTConfig.tiny()).to("meta"), "int8")


def test_int8_weights_are_about_a_quarter_of_fp32() -> None:
    model = GPT(GPTConfig.tiny())
    q = quantize(copy.deepcopy(model), "int8")
    ratio = weight_bytes(q) / weight_bytes(model)
    assert ratio <= 0.30, ratio  # int8 tables + fp32 scales, biases and LayerNorms; tied table once


def _fake(monkeypatch: pytest.MonkeyPatch, **caps: bool) -> None:
    monkeypatch.setattr(quant, "capabilities", lambda device="cpu": Capabilities("cpu", names=("fake",), **caps))


def test_auto_picks_the_fastest_mode_the_faked_hardware_has(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(monkeypatch, bf16=True, int8=True)
    assert pick_dtype("auto").dtype == "int8"
    assert pick_dtype("auto", work="encode").dtype == "bf16"  # int8 embeddings miss the cosine floor
    _fake(monkeypatch, bf16=False, int8=True)
    assert pick_dtype("auto").dtype == "int8" and pick_dtype("auto", work="encode").dtype == "fp32"
    _fake(monkeypatch, bf16=True, int8=False)
    choice = pick_dtype("auto")
    assert choice.dtype == "bf16" and "bf16" in choice.reason
    _fake(monkeypatch, bf16=False, int8=False)
    assert pick_dtype("auto").dtype == "fp32"
    assert pick_dtype("bf16").dtype == "bf16"  # an explicit mode is kept
    with pytest.raises(ValueError, match="dtype"):
        pick_dtype("fp16")
    with pytest.raises(ValueError, match="work"):
        pick_dtype("auto", work="train")
    with pytest.raises(ValueError, match="CPU"):
        pick_dtype("int8", caps=Capabilities("cuda", bf16=True, int8=False))


def test_auto_on_this_machine_picks_a_mode_it_has() -> None:
    caps = quant.capabilities("cpu")
    for work in quant.WORKS:
        choice = pick_dtype("auto", work=work)
        assert choice.dtype in quant.DTYPES and choice.reason.startswith("auto")
        assert choice.dtype != "int8" or caps.int8
        assert choice.dtype != "bf16" or caps.bf16


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_quantized_weights_round_trip_through_safetensors(tmp_path, mode: str) -> None:
    model = quantize(GPT(GPTConfig.tiny()), mode)
    path = tmp_path / "q.safetensors"
    save_quantized(model, path)
    loaded = load_quantized(GPT(GPTConfig.tiny()), path)  # fresh random weights, replaced by the file's
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    table = loaded.lm_head.qweight if mode == "int8" else loaded.lm_head.weight
    assert table is loaded.embed.tokens.table  # the tie survives
    idx = torch.randint(0, 256, (2, 10))
    with torch.inference_mode():
        assert torch.equal(model(idx), loaded(idx))
    with pytest.raises(ValueError, match="not an attnkit quantized model"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
        load_quantized(GPT(GPTConfig.tiny()), tmp_path / "plain.safetensors")


@pytest.mark.slow
def test_quantized_demo_model_keeps_its_held_out_exact_match(tmp_path) -> None:
    """The trained dates demo (a few minutes): int8 and bf16 stay within 0.5 points of fp32's exact match."""
    from attnkit.cli.main import main
    from attnkit.data.dates import dates_corpus
    from attnkit.tasks.runs import open_run
    from attnkit.tasks.translation import Translator

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    test = dates_corpus(1000, seed=1)  # the demo's held-out dates (its --seed 0, plus one)
    fp32 = open_run(out, family="translation").inference

    def exact(translator: Translator) -> float:
        hyps = translator.translate(test.src)
        return 100.0 * sum(h == r for h, r in zip(hyps, test.tgt, strict=True)) / len(test)

    base = exact(fp32)
    for mode in ("int8", "bf16"):
        model = quantize(copy.deepcopy(fp32.model), mode)
        got = exact(Translator(model, fp32.src_tok, fp32.tgt_tok, fp32.max_len, fp32.meta))
        assert abs(got - base) <= 0.5, f"{mode}: exact match {got:.1f}% vs fp32 {base:.1f}%"
