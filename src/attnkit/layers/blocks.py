"""The Transformer layer (spec part 2, item 1), shared by the encoder, the decoder, GPT and BERT.

Encoder layer: self-attention, FFN. Decoder layer: masked self-attention, encoder-decoder attention, FFN.
Every sub-layer has a residual connection and LayerNorm, either after it (post-norm, the paper's and
BERT's: ``LayerNorm(x + Sublayer(x))``) or before it (pre-norm, GPT-2's: ``x + Sublayer(LayerNorm(x))``).
A Llama-lineage layer is the pre-norm layer with RMSNorm, the SwiGLU feed-forward and the self-attention
arguments of :class:`~attnkit.attention.multihead.MultiHeadAttention` (grouped K/V heads, RoPE, window,
q/k norms, q/k/v biases).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from attnkit.attention.cache import KVCache, StaticKVCache
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.attention.rope import RotaryEmbedding
from attnkit.layers.dropout import Dropout
from attnkit.layers.feedforward import FeedForward
from attnkit.layers.norms import make_norm


@dataclass
class LayerCache:
    """Per-layer decoding state: the self-attention cache and, in a decoder, the cross-attention one."""

    self_attn: KVCache | StaticKVCache
    cross_attn: KVCache | StaticKVCache | None = None

    def reorder(self, index: Tensor) -> None:
        self.self_attn.reorder(index)
        if self.cross_attn is not None:
            self.cross_attn.reorder(index)


class StaticLayers:
    """The fixed-shape decoding state of a compiled session (GPT's or the Transformer decoder's), made from
    its filled uncompiled caches: per layer a static self-attention cache of ``capacity`` C and, in a
    decoder, the cross-attention keys/values as a read-only static cache; the key mask [B, 1, 1, C] (True =
    a real token written), this step's positions [B, 1] and cache slot [1] (updated in place by
    :meth:`advance`, so that the compiled step's inputs keep their identity and shapes)."""

    def __init__(self, caches: list[LayerCache], length: int, capacity: int, real: Tensor | None = None) -> None:
        """``caches`` hold ``length`` positions; ``real`` [B, length] marks the real (non-padding) ones;
        ``capacity``: see :func:`~attnkit.attention.cache.static_capacity`."""
        first = caches[0].self_attn
        assert isinstance(first, KVCache) and first.k is not None  # (filled, uncompiled)
        b, device = first.k.shape[0], first.k.device
        self.write_at = torch.zeros(1, dtype=torch.long, device=device)
        self.caches = [LayerCache(StaticKVCache.holding(c.self_attn, capacity, self.write_at),
                                  None if c.cross_attn is None else _read_only(c.cross_attn)) for c in caches]
        self.key_mask = torch.zeros(b, 1, 1, capacity, dtype=torch.bool, device=device)
        self.key_mask[:, 0, 0, :length] = True if real is None else real
        self.positions = torch.zeros(b, 1, dtype=torch.long, device=device)

    def advance(self, slot: int, positions: Tensor | None = None) -> None:
        """Prepare the step that writes cache slot ``slot``: its tokens are at ``positions`` [B, 1] (None:
        every row at ``slot``) and are real tokens."""
        if positions is None:
            self.positions.fill_(slot)
        else:
            self.positions.copy_(positions)
        self.write_at.fill_(slot)
        self.key_mask[:, :, :, slot] = True

    def reorder(self, index: Tensor, cross: bool = True) -> None:
        """Keep batch rows ``index``; ``cross`` False: the cross-attention caches stay (their rows' sentences
        did not move, as when beam search reorders hypotheses within a sentence)."""
        for cache in self.caches:
            cache.self_attn.reorder(index)
            if cross and cache.cross_attn is not None:
                cache.cross_attn.reorder(index)
        self.key_mask = self.key_mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)


def _read_only(cache: KVCache | StaticKVCache) -> StaticKVCache:
    """A filled cross-attention cache as a read-only static one of its own length."""
    assert isinstance(cache, KVCache)
    return StaticKVCache.holding(cache, cache.held, None)


class LayerOutput(NamedTuple):
    x: Tensor  # [B, T, E]
    self_weights: Tensor | None  # [B, H, T, T'] when need_weights
    cross_weights: Tensor | None  # [B, H, T, S] when need_weights and cross-attention


class TransformerLayer(nn.Module):
    """One encoder layer (``cross_attention=False``) or decoder layer (``cross_attention=True``).

    Args:
        d_model, num_heads, d_ff: E, H and the FFN's hidden width.
        dropout: on each sub-layer's output (before the residual sum) and inside the FFN.
        attn_dropout: on attention weights (default: ``dropout``).
        activation_dropout: inside the FFN, after the activation (default: ``dropout``; Marian's and
        fairseq's ``activation_dropout``).
        activation: "relu" (the paper), "gelu" (BERT), "gelu_tanh" (GPT-2) or "swiglu" (Llama).
        norm_first: pre-norm instead of post-norm. eps: the norms' epsilon. bias: biases in linears (and
        LayerNorms). norm: "layernorm" or "rmsnorm".
        num_kv_heads, qkv_bias, rope, window, qk_norm: the self-attention's (see MultiHeadAttention).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        dropout: float = 0.1,
        attn_dropout: float | None = None,
        activation_dropout: float | None = None,
        activation: str = "relu",
        norm_first: bool = False,
        cross_attention: bool = False,
        eps: float = 1e-5,
        bias: bool = True,
        norm: str = "layernorm",
        num_kv_heads: int | None = None,
        qkv_bias: bool | None = None,
        rope: RotaryEmbedding | None = None,
        window: int | None = None,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, attn_dropout, bias, num_kv_heads=num_kv_heads,
                                            qkv_bias=qkv_bias, rope=rope, window=window, qk_norm=qk_norm, eps=eps)
        self.self_attn_norm = make_norm(norm, d_model, eps, bias)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, attn_dropout, bias) if cross_attention else None
        self.cross_attn_norm = make_norm(norm, d_model, eps, bias) if cross_attention else None
        self.ffn = FeedForward(d_model, d_ff, activation, dropout if activation_dropout is None else activation_dropout,
                               bias)
        self.ffn_norm = make_norm(norm, d_model, eps, bias)
        self.dropout = Dropout(dropout)

    def _sublayer(self, x: Tensor, norm: nn.Module, fn) -> tuple[Tensor, Tensor | None]:
        """Residual + LayerNorm around ``fn`` (which returns (output, weights or None))."""
        if self.norm_first:
            y, w = fn(norm(x))
            return x + self.dropout(y), w
        y, w = fn(x)
        return norm(x + self.dropout(y)), w

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ) -> LayerOutput:
        """x [B, T, E]; mask: self-attention mask broadcastable to [B, H, T, T] (True = may attend);
        causal: decoder/GPT masking; memory [B, S, E]: encoder output for cross-attention, with
        memory_mask broadcastable to [B, H, T, S]; cache: decoding state (see LayerCache); positions:
        the tokens' absolute positions [T] or [B, T] for RoPE (see MultiHeadAttention.forward)."""
        self_cache = cache.self_attn if cache is not None else None
        x, self_w = self._sublayer(
            x,
            self.self_attn_norm,
            lambda h: self.self_attn(h, mask=mask, causal=causal, need_weights=need_weights, cache=self_cache,
                                     positions=positions),
        )
        cross_w = None
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("a decoder layer (cross_attention=True) needs the encoder output `memory`")
            cross_cache = cache.cross_attn if cache is not None else None
            x, cross_w = self._sublayer(
                x,
                self.cross_attn_norm,
                lambda h: self.cross_attn(
                    h, memory, mask=memory_mask, need_weights=need_weights, cache=cross_cache
                ),
            )
        x, _ = self._sublayer(x, self.ffn_norm, lambda h: (self.ffn(h), None))
        return LayerOutput(x, self_w, cross_w)


class StackOutput(NamedTuple):
    """What a stack of layers (an encoder, a decoder, GPT's or BERT's layers) returns."""

    hidden: Tensor  # [B, T, E] the last layer's output (or, from a model, after its final norm)
    self_weights: list[Tensor] | None  # per layer [B, H, T, T'] when need_weights, else None
    cross_weights: list[Tensor] | None  # per layer [B, H, T, S] when need_weights in a decoder, else None


class LayerStack(nn.ModuleList):
    """N :class:`TransformerLayer` applied in order: the one layer loop of every family (the state-dict
    keys are a ModuleList's, ``0.self_attn...``)."""

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        caches: list[LayerCache] | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ) -> StackOutput:
        """x [B, T, E] through every layer (arguments as :meth:`TransformerLayer.forward`; ``caches``: one
        LayerCache per layer or None). need_weights: collect each layer's attention weights."""
        self_ws: list[Tensor] = []
        cross_ws: list[Tensor] = []
        for i, layer in enumerate(self):
            out = layer(x, mask=mask, causal=causal, memory=memory, memory_mask=memory_mask,
                        cache=None if caches is None else caches[i], need_weights=need_weights,
                        positions=positions)
            x = out.x
            if need_weights:
                self_ws.append(out.self_weights)
                if out.cross_weights is not None:
                    cross_ws.append(out.cross_weights)
        if not need_weights:
            return StackOutput(x, None, None)
        return StackOutput(x, self_ws, cross_ws or None)
