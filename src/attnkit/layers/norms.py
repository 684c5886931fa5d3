"""The normalisations of a layer's sub-layers: LayerNorm (the paper, GPT-2, BERT) or RMSNorm (Zhang &
Sennrich 2019; the Llama lineage): ``x / sqrt(mean(x^2) + eps) * weight``, no centring and no bias.
Both are PyTorch's own modules (``nn.LayerNorm``, ``nn.RMSNorm``)."""

from __future__ import annotations

from torch import nn

NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, d_model: int, eps: float, bias: bool = True) -> nn.Module:
    """A normalisation over the last dimension d_model: ``kind`` "layernorm" (with a bias unless
    ``bias=False``) or "rmsnorm" (never a bias)."""
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return nn.RMSNorm(d_model, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
