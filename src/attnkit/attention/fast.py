"""The fast paths of multi-head attention, beside the reference path of :mod:`attnkit.attention.multihead`.

Each computes exactly what the reference computes (tests/attention/test_multihead.py compares them):

* :func:`fast_attention`: the heads' scaled dot-product soft attention through PyTorch's fused
  ``scaled_dot_product_attention`` (flash / memory-efficient kernels: no [T, S] weights in memory), with
  attnkit's rule for a query that may attend to nothing (output 0, where SDPA gives NaN), and two small
  products for one query (a decoding step), cheaper than SDPA's kernel there.
* :class:`StackedProjections`: several projections of the same input (q, k, v; or k, v of the encoder
  output) as one matrix product over their stacked weights; inside a frozen-weights block the stacked
  weight is made once (:mod:`attnkit.derived`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.masks import masked_softmax
from attnkit.attention.scoring import scaled_dot
from attnkit.derived import DerivedTensor
from attnkit.kernels import linear

# Stacking the q/k/v weights copies 3 E^2 numbers: worth it for a large product (training, prompts), not for
# a decoding step of a few tokens, which reads every weight once either way and would read them three times.
STACK_MIN_TOKENS = 64


def fast_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, is_causal: bool) -> Tensor:
    """softmax(Q K^T / sqrt(Dh)) V for q [B, H, T, Dh], k and v [B, Hkv, S, Dh] -> [B, H, T, Dh].

    Hkv divides H (grouped-query attention: query head h uses key/value head h // (H / Hkv); Hkv == H is
    ordinary multi-head attention); K and V are never repeated in memory. mask: bool broadcastable to
    [B, H, T, S] (True = may attend) or None; is_causal: SDPA's own causal mask (only when T == S and there
    is no other mask); dropout: on the weights (training)."""
    groups = q.shape[1] // k.shape[1]
    if q.shape[-2] == 1 and not dropout:
        # One query (a decoding step): two small products are cheaper than SDPA's kernel, whose parallel
        # loop over B x H costs more than the work (and stalls when the other cores are busy).
        if groups > 1:
            return _grouped_step(q, k, v, mask)
        return masked_softmax(scaled_dot(q, k), mask) @ v  # (B, H, 1, Dh); no allowed key gives 0, as below
    gqa = groups > 1
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=is_causal, enable_gqa=gqa)
    # SDPA gives NaN for a query with no allowed key; let it see every key, then zero its output.
    any_allowed = mask.any(-1, keepdim=True)  # (B|1, H|1, T|1, 1)
    if mask.device.type == "cpu" and bool(any_allowed.all()):
        # The usual case (e.g. padding of non-empty sentences): skip the fix-up and its backward; the
        # check is a cheap read on the CPU (on an accelerator it would be a synchronisation).
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa)
    safe = mask | ~any_allowed
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=dropout, enable_gqa=gqa)
    return out * any_allowed


def _grouped_step(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """One query per head with grouped K/V: each group's G query heads are G queries of its one K/V head
    ([B, Hkv, G, Dh] against [B, Hkv, S, Dh]), so the cache is read once per group. -> [B, H, 1, Dh]."""
    b, h, _, dh = q.shape
    hkv = k.shape[1]
    if mask is not None and mask.dim() >= 3 and mask.shape[-3] != 1:  # one mask per head: group them too
        mask = mask.reshape(*mask.shape[:-3], hkv, h // hkv, mask.shape[-1])  # (B|1, Hkv, G, S)
    out = masked_softmax(scaled_dot(q.reshape(b, hkv, h // hkv, dh), k), mask) @ v  # (B, Hkv, G, Dh)
    return out.reshape(b, h, 1, dh)


def _concat(*parts: Tensor) -> Tensor:
    return torch.cat(parts)


class StackedProjections:
    """Projections of one input by several linears in one product; the parameters stay separate (training
    stacks them inside the autograd graph, so each gets its gradient)."""

    def __init__(self) -> None:
        self._stacks = {n: DerivedTensor(_concat) for n in ("qkv_w", "qkv_b", "kv_w", "kv_b")}

    def __call__(self, x: Tensor, projections: tuple[nn.Linear, ...]) -> tuple[Tensor, ...]:
        """x [B, T, E_in] -> one [B, T, out_features] tensor per projection (q, k, v or k, v; with grouped
        heads k and v are narrower than q)."""
        weights = [p.weight for p in projections]
        biases = None if projections[0].bias is None else [p.bias for p in projections]
        if torch.is_grad_enabled():
            weight = torch.cat(weights)
            bias = None if biases is None else torch.cat(biases)
        else:
            name = "qkv" if len(projections) == 3 else "kv"
            weight = self._stacks[name + "_w"].get(weights)
            bias = None if biases is None else self._stacks[name + "_b"].get(biases)
        return linear(x, weight, bias).split([p.out_features for p in projections], dim=-1)

    def cached(self, name: str) -> Tensor | None:
        """The stacked weight or bias ``name`` ("qkv_w", "qkv_b", "kv_w", "kv_b") held now, if any."""
        return self._stacks[name].value
