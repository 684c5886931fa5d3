import math

import pytest
import torch
from torch import nn

from attnkit.attention import KVCache, causal_mask, padding_mask
from attnkit.layers import Embeddings, FeedForward, LayerCache, TransformerLayer, sinusoidal_table


def _copy_attn(ours, ref):
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)


def _copy_common(ours: TransformerLayer, ref) -> None:
    _copy_attn(ours.self_attn, ref.self_attn)
    with torch.no_grad():
        ref.linear1.load_state_dict(ours.ffn.fc1.state_dict())
        ref.linear2.load_state_dict(ours.ffn.fc2.state_dict())
        ref.norm1.load_state_dict(ours.self_attn_norm.state_dict())
        last = ref.norm3 if hasattr(ref, "norm3") else ref.norm2
        last.load_state_dict(ours.ffn_norm.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch(norm_first):
    ours = TransformerLayer(16, 4, 32, dropout=0.0, norm_first=norm_first).eval()
    ref = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    _copy_common(ours, ref)
    x = torch.randn(3, 6, 16)
    keep = torch.arange(6)[None] < torch.tensor([6, 4, 2])[:, None]
    with torch.no_grad():
        torch.testing.assert_close(ours(x, mask=padding_mask(keep)).x[keep], ref(x, src_key_padding_mask=~keep)[keep],
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch_and_cache(norm_first):
    ours = TransformerLayer(16, 4, 32, dropout=0.0, norm_first=norm_first, cross_attention=True).eval()
    ref = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    _copy_common(ours, ref)
    _copy_attn(ours.cross_attn, ref.multihead_attn)
    ref.norm2.load_state_dict(ours.cross_attn_norm.state_dict())
    x, mem = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    keep = torch.arange(7)[None] < torch.tensor([7, 3])[:, None]
    with torch.no_grad():
        out = ours(x, causal=True, memory=mem, memory_mask=padding_mask(keep)).x
        expected = ref(x, mem, tgt_mask=~causal_mask(5), memory_key_padding_mask=~keep)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        cache = LayerCache(KVCache(5), KVCache(7))
        steps = [ours(x[:, i : i + 1], causal=True, memory=mem, memory_mask=padding_mask(keep), cache=cache).x
                 for i in range(5)]
        torch.testing.assert_close(torch.cat(steps, 1), out, atol=1e-5, rtol=1e-5)


def test_layer_weights_and_errors():
    layer = TransformerLayer(8, 2, 16, cross_attention=True).eval()
    out = layer(torch.randn(1, 3, 8), memory=torch.randn(1, 4, 8), need_weights=True)
    assert out.self_weights.shape == (1, 2, 3, 3) and out.cross_weights.shape == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="memory"):
        layer(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="activation"):
        FeedForward(8, 16, activation="swish")


def test_sinusoidal_table_formula_and_embeddings():
    table = sinusoidal_table(50, 6)
    for pos in (0, 7, 49):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert math.isclose(table[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(table[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)
    emb = Embeddings(10, 6, 50, positions="sinusoidal", scale=True).eval()
    ids = torch.tensor([[1, 2, 3]])
    expected = emb.tokens(ids) * math.sqrt(6) + table[2:5]
    torch.testing.assert_close(emb(ids, offset=2), expected)
    with pytest.raises(ValueError, match="maximum length"):
        emb(ids, offset=48)
