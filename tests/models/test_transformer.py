"""The Transformer encoder-decoder against torch.nn.Transformer, its analytic size, causality, caching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.decoding import GenerationConfig, generate
from attnkit.derived import frozen_weights
from attnkit.kernels import FP32_KERNELS, using_fp32_kernel
from attnkit.layers.linear import FastLinear
from attnkit.layers.losses import smoothed_cross_entropy
from attnkit.models.transformer import Transformer, TransformerConfig


def _copy_mha(ours, theirs: nn.MultiheadAttention) -> None:
    w = torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
    b = torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias])
    theirs.in_proj_weight.copy_(w)
    theirs.in_proj_bias.copy_(b)
    theirs.out_proj.weight.copy_(ours.out_proj.weight)
    theirs.out_proj.bias.copy_(ours.out_proj.bias)


def _copy_norm(ours: nn.LayerNorm, theirs: nn.LayerNorm) -> None:
    theirs.weight.copy_(ours.weight)
    theirs.bias.copy_(ours.bias)


def _reference(model: Transformer) -> nn.Transformer:
    c = model.config
    ref = nn.Transformer(c.d_model, c.n_heads, c.n_encoder_layers, c.n_decoder_layers, c.d_ff, dropout=0.0,
                         batch_first=True, norm_first=c.norm_first)
    with torch.no_grad():
        for ours, theirs in zip(model.encoder, ref.encoder.layers, strict=True):
            _copy_mha(ours.self_attn, theirs.self_attn)
            theirs.linear1.load_state_dict(ours.ffn.fc1.state_dict())
            theirs.linear2.load_state_dict(ours.ffn.fc2.state_dict())
            _copy_norm(ours.self_attn_norm, theirs.norm1)
            _copy_norm(ours.ffn_norm, theirs.norm2)
        for ours, theirs in zip(model.decoder, ref.decoder.layers, strict=True):
            _copy_mha(ours.self_attn, theirs.self_attn)
            _copy_mha(ours.cross_attn, theirs.multihead_attn)
            theirs.linear1.load_state_dict(ours.ffn.fc1.state_dict())
            theirs.linear2.load_state_dict(ours.ffn.fc2.state_dict())
            _copy_norm(ours.self_attn_norm, theirs.norm1)
            _copy_norm(ours.cross_attn_norm, theirs.norm2)
            _copy_norm(ours.ffn_norm, theirs.norm3)
        # nn.Transformer always has final norms; with ours off, make them absent.
        if model.encoder_norm is None:
            ref.encoder.norm = None
            ref.decoder.norm = None
        else:
            _copy_norm(model.encoder_norm, ref.encoder.norm)
            _copy_norm(model.decoder_norm, ref.decoder.norm)
    return ref.eval()


def _batch(vocab: int, b: int = 3, s: int = 7, t: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (b, s), generator=g)
    tgt = torch.randint(4, vocab, (b, t), generator=g)
    src[0, 5:] = 0  # padding in the source
    src[1, 3:] = 0
    tgt[0, 4:] = 0
    return src, tgt


@pytest.mark.parametrize("norm_first", [False, True])
def test_equals_torch_transformer(norm_first: bool) -> None:
    torch.manual_seed(0)
    cfg = TransformerConfig.tiny(src_vocab_size=50, tgt_vocab_size=50, norm_first=norm_first,
                                 n_encoder_layers=2, n_decoder_layers=3)
    model = Transformer(cfg).eval()
    ref = _reference(model)
    src, tgt = _batch(50)
    with torch.no_grad():
        ours_mem = model.encode(src).hidden
        ours = model.decode(tgt, ours_mem, model.source_mask(src)).hidden
        theirs = ref(
            model.src_embed(src), model.tgt_embed(tgt),
            tgt_mask=nn.Transformer.generate_square_subsequent_mask(tgt.shape[1]),
            src_key_padding_mask=src == 0, memory_key_padding_mask=src == 0,
        )
        theirs_mem = ref.encoder(model.src_embed(src), src_key_padding_mask=src == 0)
    real = (src != 0).unsqueeze(-1)
    torch.testing.assert_close(ours_mem * real, theirs_mem * real, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    logits = model(src, tgt)
    torch.testing.assert_close(logits, theirs @ model.tgt_embed.tokens.weight.T, atol=1e-4, rtol=1e-5)


def _analytic_count(v: int, e: int, f: int, n_enc: int, n_dec: int) -> int:
    mha = 4 * (e * e + e)
    ffn = e * f + f + f * e + e
    norm = 2 * e
    enc_layer = mha + ffn + 2 * norm
    dec_layer = 2 * mha + ffn + 3 * norm
    return v * e + n_enc * enc_layer + n_dec * dec_layer  # one shared, tied embedding matrix


def test_base_parameter_count() -> None:
    cfg = TransformerConfig.base(src_vocab_size=37000, tgt_vocab_size=37000)
    with torch.device("meta"):
        model = Transformer(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == _analytic_count(37000, 512, 2048, 6, 6)
    assert 60e6 < n < 66e6  # the paper's "65M"


def test_decoder_is_causal() -> None:
    torch.manual_seed(1)
    model = Transformer(TransformerConfig.tiny(src_vocab_size=30, tgt_vocab_size=30)).eval()
    src, tgt = _batch(30, b=2, t=8)
    tgt[0, 4:] = 7
    changed = tgt.clone()
    changed[:, 5:] = torch.randint(4, 30, (2, 3))
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=0, rtol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_padding_does_not_change_encoding() -> None:
    torch.manual_seed(2)
    model = Transformer(TransformerConfig.tiny(src_vocab_size=30, tgt_vocab_size=30)).eval()
    src = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(src).hidden, model.encode(padded).hidden[:, :4], atol=1e-6,
                                   rtol=1e-6)


@pytest.mark.parametrize("kernel", FP32_KERNELS)
@pytest.mark.parametrize("positions, b", [("sinusoidal", 3), ("learned", 3), ("sinusoidal", 1)])
def test_cached_decoding_equals_uncached(positions: str, b: int, kernel: str) -> None:
    """b = 1: every decoding product has one row, read through FastLinear's [in, out] weight copies (with
    the "mkl" kernel; oneDNN reads the stored weights)."""
    with using_fp32_kernel(kernel):
        _cached_decoding_equals_uncached(positions, b, kernel)


def _cached_decoding_equals_uncached(positions: str, b: int, kernel: str) -> None:
    torch.manual_seed(3)
    cfg = TransformerConfig.tiny(src_vocab_size=40, tgt_vocab_size=40, positions=positions, max_len=32)
    model = Transformer(cfg).eval()
    src = _batch(40, b=3, s=6)[0][:b]
    bos = torch.full((b, 1), cfg.bos_id)
    with frozen_weights():  # held open here so that the copies can be inspected after generate
        cached = generate(model.start_decoding(src), bos, GenerationConfig(max_new_tokens=12))
        packed = [m for m in model.modules() if isinstance(m, FastLinear) and m._packed.value is not None]
    # Uncached: re-run the whole prefix through forward at every step.
    seq = bos
    for _ in range(12):
        nxt = model(src, seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(cached, seq[:, 1:])
    assert bool(packed) == (b == 1 and kernel == "mkl")  # the one-row copy (only for one sentence)


def test_tied_and_untied_embeddings() -> None:
    tied = Transformer(TransformerConfig.tiny(src_vocab_size=40, tgt_vocab_size=40))
    assert tied.output.weight is tied.src_embed.tokens.weight is tied.tgt_embed.tokens.weight
    untied = Transformer(TransformerConfig.tiny(src_vocab_size=40, tgt_vocab_size=30, share_embeddings=False,
                                                tie_output=False))
    assert untied.output.weight.shape == (30, 64)
    assert untied.src_embed is not untied.tgt_embed
    with pytest.raises(ValueError, match="one vocabulary"):
        TransformerConfig.tiny(src_vocab_size=40, tgt_vocab_size=30)


def test_config_json_roundtrip(tmp_path) -> None:
    cfg = TransformerConfig.small(src_vocab_size=123, tgt_vocab_size=123, norm_first=True)
    cfg.save(tmp_path / "config.json")
    assert TransformerConfig.load(tmp_path / "config.json") == cfg
    assert cfg.final_norm is True


def test_loss_sum_equals_loss_of_full_logits_and_its_gradients() -> None:
    torch.manual_seed(4)
    model = Transformer(TransformerConfig.tiny(src_vocab_size=40, tgt_vocab_size=40))
    src, tgt = _batch(40, b=3, s=7, t=6)
    tgt_in, tgt_out = tgt, torch.roll(tgt, -1, 1)
    tgt_out[1, 3:] = 0  # padding targets: not projected by loss_sum
    ours = model.loss_sum(src, tgt_in, tgt_out, smoothing=0.1)
    (g_ours,) = torch.autograd.grad(ours.total, model.output.weight)
    ref = smoothed_cross_entropy(model(src, tgt_in), tgt_out, smoothing=0.1, ignore_index=0)
    (g_ref,) = torch.autograd.grad(ref.total, model.output.weight)
    assert int(ours.count) == int(ref.count) == int((tgt_out != 0).sum())
    torch.testing.assert_close(ours.total, ref.total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
