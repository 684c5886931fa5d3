"""Multi-head attention (spec part 1 item 4, part 2 items 3-4): project, split heads, scaled dot-product
per head, concatenate, project.

    MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W_O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Self-attention and cross-attention (the Transformer's encoder-decoder attention) are the same module:
``key=None`` attends over the query sequence itself; otherwise queries come from ``query`` and keys and
values from ``key``/``value`` (the encoder output). The spec's TensorFlow
``multihead_attention(queries, keys, num_units, num_heads, dropout_rate, is_training, causality)`` maps to
``MultiHeadAttention(num_units, num_heads, dropout_rate)`` (train()/eval() for ``is_training``) called as
``mha(queries, keys, causal=causality)``; ``keys=queries`` is ``key=None`` here.

Each head is part 1's soft attention with the scaled dot-product score (``SoftAttention(ScaledDotScore())``,
the reference path, which also returns the weights). The fast paths that compute the same thing (PyTorch's
fused SDPA kernel, the one-query decoding step, q/k/v projections in one stacked product) live in
:mod:`attnkit.attention.fast` and are tested equal to it.

The attention of the Llama lineage is the same module with other arguments: ``num_kv_heads`` < H
(grouped-query attention: H / Hkv query heads share one key/value head; the KV cache holds only the Hkv
heads), ``rope`` (rotary positions, applied to queries and keys before the keys enter the cache),
``window`` (sliding-window causal attention, Mistral), ``qk_norm`` (RMSNorm of each head's queries and
keys, Qwen3) and ``qkv_bias`` (biases on q/k/v but not on the output projection, Qwen2).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from attnkit.attention.cache import KVCache, StaticKVCache
from attnkit.attention.fast import STACK_MIN_TOKENS, StackedProjections, fast_attention
from attnkit.attention.masks import check_mask, self_attention_mask
from attnkit.attention.rope import RotaryEmbedding
from attnkit.attention.scoring import ScaledDotScore
from attnkit.attention.soft import SoftAttention
from attnkit.derived import DerivedOwner


class AttentionOutput(NamedTuple):
    output: Tensor  # [B, T, E]
    weights: Tensor | None  # [B, H, T, S] when need_weights, else None


class MultiHeadAttention(DerivedOwner, nn.Module):
    """Multi-head scaled dot-product attention with separate q/k/v/out projections.

    Args:
        embed_dim: E, the width of queries and of the output. num_heads: H (E must be divisible by H).
        dropout: dropout on the attention weights (training only). bias: biases in the projections.
        kdim, vdim: widths of keys and values for cross-attention (default E).
        num_kv_heads: Hkv, the key/value heads (grouped-query attention; 1 = multi-query; default H). Query
            head h uses key/value head h // (H / Hkv), the layout of Llama's checkpoints.
        qkv_bias: biases in the q/k/v projections (default ``bias``; Qwen2: True with ``bias=False``).
        rope: a :class:`~attnkit.attention.rope.RotaryEmbedding` rotating queries and keys of
            self-attention by their positions (None: no rotation).
        window: with ``causal``, each query sees only the last ``window`` keys (itself included).
        qk_norm: RMSNorm (epsilon ``eps``) over each head's queries and keys, before RoPE (Qwen3).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        *,
        num_kv_heads: int | None = None,
        qkv_bias: bool | None = None,
        rope: RotaryEmbedding | None = None,
        window: int | None = None,
        qk_norm: bool = False,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})"
            )
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if window is not None and window < 1:
            raise ValueError(f"the attention window must be >= 1, got {window}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.num_kv_heads, self.window = num_kv_heads, window
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout = dropout
        qkv_bias = bias if qkv_bias is None else qkv_bias
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(self.kdim, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(self.vdim, kv_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else None
        self.rope = rope
        self.head_attention = SoftAttention(ScaledDotScore())  # one head's attention, over [B*H, T, Dh]
        # Inference inside a frozen-weights block reuses the stacked q/k/v and k/v weights (stacking them
        # again at every decoding step was 3% of greedy decoding; see attnkit.derived).
        self._stacked = StackedProjections()
        self._watch_weights()

    def _split(self, x: Tensor, heads: int) -> Tensor:
        return x.unflatten(-1, (heads, self.head_dim)).transpose(1, 2)  # (B, heads, T, Dh)

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"query must be [B, T, {self.embed_dim}], got {tuple(query.shape)}")
        if key.dim() != 3 or key.shape[-1] != self.kdim or key.shape[0] != query.shape[0]:
            raise ValueError(
                f"key must be [B, S, {self.kdim}] with the query's batch, got key {tuple(key.shape)} "
                f"and query {tuple(query.shape)}"
            )
        if value.dim() != 3 or value.shape[-1] != self.vdim or value.shape[:2] != key.shape[:2]:
            raise ValueError(
                f"value must be [B, S, {self.vdim}] with the key's B and S, got value "
                f"{tuple(value.shape)} and key {tuple(key.shape)}"
            )

    def _project(self, query: Tensor, key: Tensor | None, value: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The projections q [B, T, E], k and v [B, S, Hkv * Dh] (stacked in one product when large)."""
        b, t, _ = query.shape
        stack = not torch.compiler.is_compiling()  # compiled: separate products (no derived weights to trace)
        if key is None and b * t >= STACK_MIN_TOKENS and stack:
            return self._stacked(query, (self.q_proj, self.k_proj, self.v_proj))
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value)
        q = self.q_proj(query)
        if value is key and key.shape[0] * key.shape[1] >= STACK_MIN_TOKENS and stack:
            k, v = self._stacked(key, (self.k_proj, self.v_proj))  # cross: K and V at once
        else:
            k, v = self.k_proj(key), self.v_proj(value)
        return q, k, v

    def _heads_qkv(
        self, query: Tensor, key: Tensor | None, value: Tensor | None, cache: KVCache | None,
        positions: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries [B, H, T, Dh] and the keys and values to attend over [B, Hkv, S, Dh]: this call's
        (normalised, rotated), after the cache's when there is one."""
        if key is not None and self.rope is not None:
            raise ValueError("rotary positions apply to self-attention only (key must be None)")
        if key is not None and cache is not None and cache.filled:
            q = self._split(self.q_proj(query), self.num_heads)
            k, v = cache.view()  # cross-attention: the encoder's keys/values were stored at step 0
            return (q if self.q_norm is None else self.q_norm(q)), k, v
        q, k, v = self._project(query, key, value)
        q, k, v = self._split(q, self.num_heads), self._split(k, self.num_kv_heads), self._split(v, self.num_kv_heads)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            if positions is None:
                first = 0 if cache is None else cache.length
                positions = torch.arange(first, first + query.shape[1], device=query.device)
            cos, sin = self.rope.cos_sin(positions, q.dtype)  # (B|1, 1, T, Dh)
            q, k = self.rope.apply(q, cos, sin), self.rope.apply(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hkv, S, Dh)
        return q, k, v

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        cache: KVCache | StaticKVCache | None = None,
        positions: Tensor | None = None,
    ) -> AttentionOutput:
        """query [B, T, E]; key [B, S, kdim] and value [B, S, vdim], or None for self-attention.

        mask: bool broadcastable to [B, H, T, S], True = may attend (see ``padding_mask``); with a cache,
        S indexes the keys the cache holds (positions ``cache.next_start(T)`` on);
        causal: query i (at absolute position cache-length + i) sees only keys at positions <= its own
        (and, with a window W, > its own - W);
        need_weights: also return the attention weights [B, H, T, S] (the reference path);
        cache: a KVCache; self-attention appends this call's keys/values and attends over all of them;
        cross-attention fills it on the first call and reuses it afterwards (``key`` is then ignored);
        positions: the queries' absolute positions [T] or [B, T] for RoPE (default: the cache's length +
        0, 1, ...; left-padded rows pass their own).
        Returns AttentionOutput(output [B, T, E], weights or None). A query with no allowed key gets 0.
        """
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"query must be [B, T, {self.embed_dim}], got {tuple(query.shape)}")
        b, t, _ = query.shape
        q, k, v = self._heads_qkv(query, key, value, cache, positions)
        s = k.shape[2]
        if mask is not None:
            check_mask(mask, (b, self.num_heads, t, s))
        if causal and t > 1 and mask is None and t == s and not need_weights and (
                self.window is None or s <= self.window):
            mask_final, is_causal = None, True  # let SDPA use its causal kernel
        else:
            mask_final = self_attention_mask(mask, causal, t, s, self.window, device=query.device)
            is_causal = False
        p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = self._heads(q, k, v, mask_final, p)
        else:
            out, weights = fast_attention(q, k, v, mask_final, p, is_causal), None
        out = out.transpose(1, 2).reshape(b, t, self.embed_dim)  # (B, T, E): concatenate heads
        return AttentionOutput(self.out_proj(out), weights)

    def _heads(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> tuple[Tensor, Tensor]:
        """The H heads' soft attentions side by side, the reference path: q [B, H, T, Dh], k and v
        [B, Hkv, S, Dh] (each repeated for the H / Hkv query heads of its group) -> (outputs [B, H, T, Dh],
        weights [B, H, T, S])."""
        b, h, t, _ = q.shape
        s = k.shape[2]
        if k.shape[1] != h:
            k, v = k.repeat_interleave(h // k.shape[1], dim=1), v.repeat_interleave(h // v.shape[1], dim=1)
        flat_mask = None if mask is None else torch.broadcast_to(mask, (b, h, t, s)).flatten(0, 1)
        out, weights = self.head_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), flat_mask,
                                           dropout)  # (B*H, T, Dh), (B*H, T, S)
        return out.unflatten(0, (b, h)), weights.unflatten(0, (b, h))
