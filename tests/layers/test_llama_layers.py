"""The layer arguments of the Llama lineage against float64 formulas written out: RMSNorm, the SwiGLU
feed-forward (gate, up, down), and a pre-norm TransformerLayer built from them (RMSNorm, SwiGLU, grouped
heads, RoPE) equal to its parts composed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.attention import RotaryEmbedding
from attnkit.layers import FeedForward, TransformerLayer
from attnkit.layers.norms import make_norm


def rms_formula(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight.double()


def test_rmsnorm_equals_its_formula() -> None:
    norm = make_norm("rmsnorm", 24, 1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(3, 5, 24) * 4
    torch.testing.assert_close(norm(x).double(), rms_formula(x, norm.weight, 1e-6), atol=1e-5, rtol=1e-6)
    assert [n for n, _ in norm.named_parameters()] == ["weight"]  # no bias, no centring
    assert torch.allclose(norm(x + 1.0), norm(x)) is False  # unlike LayerNorm, a shift is not removed
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("batchnorm", 4, 1e-5)


def test_swiglu_feed_forward_equals_down_of_silu_gate_times_up() -> None:
    ffn = FeedForward(16, 40, "swiglu", bias=False)
    x = torch.randn(2, 3, 16)
    g, u, d = (m.weight.double() for m in (ffn.gate, ffn.fc1, ffn.fc2))
    xd = x.double()
    a = xd @ g.T
    expected = ((a * torch.sigmoid(a)) * (xd @ u.T)) @ d.T  # silu(a) = a * sigmoid(a)
    torch.testing.assert_close(ffn(x).double(), expected, atol=1e-6, rtol=1e-5)
    assert sorted(n for n, _ in ffn.named_parameters()) == ["fc1.weight", "fc2.weight", "gate.weight"]
    assert FeedForward(16, 40, "gelu").gate is None


def test_llama_layer_is_its_parts_composed() -> None:
    torch.manual_seed(0)
    layer = TransformerLayer(32, 4, 48, dropout=0.0, activation="swiglu", norm_first=True, eps=1e-6, bias=False,
                             norm="rmsnorm", num_kv_heads=2, rope=RotaryEmbedding(8, theta=500000.0)).eval()
    with torch.no_grad():
        for norm in (layer.self_attn_norm, layer.ffn_norm):
            norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, 32)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 2, 3]])
    mask = torch.tensor([[True] * 6, [False, False, True, True, True, True]])[:, None, None, :]
    with torch.no_grad():
        got = layer(x, mask=mask, causal=True, positions=pos).x
        attn = layer.self_attn
        h = x + attn(layer.self_attn_norm(x), mask=mask, causal=True, positions=pos).output
        n = layer.ffn_norm(h)
        expected = h + layer.ffn.fc2(F.silu(layer.ffn.gate(n)) * layer.ffn.fc1(n))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert isinstance(layer.self_attn_norm, torch.nn.RMSNorm) and attn.k_proj.out_features == 16
    assert all(p.dim() > 1 or "norm" in name for name, p in layer.named_parameters())  # bias=False: no biases
