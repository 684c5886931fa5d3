"""Attention, the spec's part 1: scoring functions, soft and hard attention, multi-head attention.

Shape legend used across attnkit:
    B  batch             M  queries (soft/hard attention)    N  keys
    T  target / query length          S  source / key length
    E  model width       H  heads      Dh head width (E / H)   V  vocabulary
    Dq, Dk, Dv  query, key and value widths

Mask rule, everywhere in the library: boolean, **True = may attend**, broadcastable to the scores'
shape ([B, M, N] for soft/hard attention, [B, H, T, S] for multi-head attention). A query whose every key
is masked gets output 0 and weights 0, never NaN.
"""

from attnkit.attention.cache import KVCache
from attnkit.attention.hard import HardAttention, HardAttentionOutput, reinforce_loss
from attnkit.attention.masks import causal_mask, masked_softmax, padding_mask
from attnkit.attention.multihead import AttentionOutput, MultiHeadAttention
from attnkit.attention.rope import RopeScaling, RotaryEmbedding
from attnkit.attention.scoring import AdditiveScore, BilinearScore, DotScore, ScaledDotScore, Score
from attnkit.attention.soft import SoftAttention, SoftAttentionOutput

__all__ = [
    "AdditiveScore",
    "AttentionOutput",
    "BilinearScore",
    "DotScore",
    "HardAttention",
    "HardAttentionOutput",
    "KVCache",
    "MultiHeadAttention",
    "RopeScaling",
    "RotaryEmbedding",
    "ScaledDotScore",
    "Score",
    "SoftAttention",
    "SoftAttentionOutput",
    "causal_mask",
    "masked_softmax",
    "padding_mask",
    "reinforce_loss",
]
