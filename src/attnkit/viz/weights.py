"""Collect the attention weights of every layer and head of a model, for the viewer.

The weights come from the models themselves: ``encode`` / ``decode`` of every family take
``need_weights`` and return them in their :class:`~attnkit.layers.StackOutput` (the RNN model in its
``RNNOutput``); nothing is stored on modules and no layer loop is written here. Each collector also
returns the model's final output, which the tests compare with ``forward``.

Kinds of attention: ``encoder`` (encoder self-attention), ``decoder`` (decoder / GPT masked
self-attention) and ``cross`` (encoder-decoder attention). Weights of one kind are [L, H, Tq, Tk] for one
sequence (batch row 0 of a batch of one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

KINDS = ("encoder", "decoder", "cross")
KIND_TITLES = {"encoder": "encoder self-attention", "decoder": "decoder self-attention",
               "cross": "encoder-decoder attention"}


@dataclass
class AttentionMap:
    """One kind of attention: weights [L, H, Tq, Tk], labels of the queries (rows) and keys (columns)."""

    kind: str
    weights: Tensor
    queries: list[str]
    keys: list[str]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.weights.dim() != 4 or self.weights.shape[2:] != (len(self.queries), len(self.keys)):
            raise ValueError(
                f"weights must be [L, H, {len(self.queries)}, {len(self.keys)}] for {len(self.queries)} query "
                f"and {len(self.keys)} key labels, got {tuple(self.weights.shape)}"
            )


@dataclass
class AttentionMaps:
    """All kinds of attention of one model on one input; ``model`` names the family for titles."""

    model: str
    maps: list[AttentionMap] = field(default_factory=list)

    def get(self, kind: str) -> AttentionMap:
        for m in self.maps:
            if m.kind == kind:
                return m
        raise KeyError(f"this {self.model} model has no {kind!r} attention (it has {[m.kind for m in self.maps]})")


class Collected:
    """Raw result of a collector: weights per kind ([L, B, H, Tq, Tk] stacked) and the model's output."""

    def __init__(self, weights: dict[str, Tensor], output: Tensor) -> None:
        self.weights, self.output = weights, output


def _stack(ws: list[Tensor] | None) -> Tensor:
    if ws is None or any(w is None for w in ws):
        raise RuntimeError("a layer returned no weights although need_weights=True")
    return torch.stack(ws)  # (L, B, H, Tq, Tk)


@torch.no_grad()
def transformer_weights(model: nn.Module, src: Tensor, tgt: Tensor) -> Collected:
    """An attnkit ``Transformer``: src [B, S], tgt [B, T] (BOS + target prefix). Weights: encoder
    [L, B, H, S, S], decoder [L, B, H, T, T], cross [L, B, H, T, S]; output: logits [B, T, V]."""
    src_mask = model.source_mask(src)  # (B, 1, 1, S)
    enc = model.encode(src, src_mask, need_weights=True)
    dec = model.decode(tgt, enc.hidden, src_mask, need_weights=True)
    weights = {"encoder": _stack(enc.self_weights), "decoder": _stack(dec.self_weights),
               "cross": _stack(dec.cross_weights)}
    return Collected(weights, model.output(dec.hidden))


@torch.no_grad()
def gpt_weights(model: nn.Module, idx: Tensor) -> Collected:
    """An attnkit ``GPT``: idx [B, T] (no padding). Weights: decoder [L, B, H, T, T]; output: logits."""
    out = model.decode(idx, need_weights=True)
    return Collected({"decoder": _stack(out.self_weights)}, model.lm_head(out.hidden))


@torch.no_grad()
def bert_weights(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None,
                 token_type_ids: Tensor | None = None) -> Collected:
    """An attnkit ``BERT`` (or a model with a ``.bert``): input_ids [B, T], attention_mask [B, T] (1 = real).
    Weights: encoder [L, B, H, T, T]; output: the last hidden states [B, T, E]."""
    bert = getattr(model, "bert", model)
    out = bert.encode(input_ids, attention_mask, token_type_ids, need_weights=True)
    return Collected({"encoder": _stack(out.self_weights)}, out.hidden)


@torch.no_grad()
def rnn_weights(model: nn.Module, src: Tensor, tgt: Tensor) -> Collected:
    """An attnkit ``RNNSeq2Seq``: one attention (the decoder over the encoder states), as cross
    [1, B, 1, T, S]; output: logits [B, T, V]."""
    out = model.run(src, tgt, need_weights=True)
    return Collected({"cross": out.weights[None, :, None]}, out.logits)


def to_maps(collected: Collected, model_name: str, labels: dict[str, tuple[list[str], list[str]]],
            row: int = 0) -> AttentionMaps:
    """Keep batch row ``row`` and attach labels: ``labels[kind] = (query labels, key labels)``."""
    maps = [AttentionMap(kind, w[:, row].float().cpu(), *labels[kind])
            for kind, w in collected.weights.items()]
    maps.sort(key=lambda m: KINDS.index(m.kind))
    return AttentionMaps(model_name, maps)
