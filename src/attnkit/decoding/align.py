"""Word alignments from cross-attention, for every encoder-decoder (each family's ``decode(need_weights=True)``
returns the cross-attention weights per layer, :class:`~attnkit.layers.StackOutput`).

The decoder is run once more, teacher-forced on the chosen translation, and the weights of one layer,
averaged over heads, give for each target token the source tokens it attended to when it was predicted
(row t: the step whose output is target token t). Tokens are grouped into the words of the detokenized text
(a SentencePiece-style piece starting with "▁" starts a word; special tokens belong to none); a target
word's rows are averaged, a source word's columns summed, and each target word is aligned to its source
word of largest weight: Pharaoh ``i-j`` pairs (source word i, target word j, 0-based).

Default layer: the second-to-last decoder layer (``layer=-2``; the last of a one-layer decoder), all heads.
The last layer's attention is the one that has already chosen the next word and often looks ahead or at
the source's end, the penultimate one aligns better (Garg et al. 2019 and fairseq's alignment layer make
the same choice; on the dates demo: docs/pretrained-translation.md)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

WORD_START = "▁"
DEFAULT_LAYER = -2


def cross_attention(model: nn.Module, src: Tensor, tgt_in: Tensor, layer: int = DEFAULT_LAYER,
                    heads: Sequence[int] | None = None) -> Tensor:
    """src [B, S], tgt_in [B, T] (the decoder input: start token, then the translation) -> [B, T, S]: one
    decoder layer's cross-attention averaged over ``heads`` (default all). ``layer`` counts from 0 or, when
    negative, from the end (the default -2 is the only layer of a one-layer decoder)."""
    with torch.no_grad():
        mask = model.source_mask(src)
        memory = model.encode(src, mask).hidden
        weights = model.decode(tgt_in, memory, mask, need_weights=True).cross_weights  # per layer [B, H, T, S]
    n = len(weights)
    index = layer if layer >= 0 else n + layer
    if index < 0 and layer == DEFAULT_LAYER:
        index = 0  # a one-layer decoder has no second-to-last layer
    if not 0 <= index < n:
        raise ValueError(f"layer {layer}: the decoder has {n} layers")
    w = weights[index]
    if heads is not None:
        bad = [h for h in heads if not 0 <= h < w.shape[1]]
        if bad:
            raise ValueError(f"heads {bad}: the model has {w.shape[1]} heads")
        w = w[:, list(heads)]
    return w.mean(1)


def word_ids(tokens: Sequence[str], special: Sequence[bool]) -> list[int]:
    """The word index of each token (-1 for special tokens): a token starting with "▁" starts a word."""
    out, word = [], -1
    for tok, is_special in zip(tokens, special, strict=True):
        if is_special:
            out.append(-1)
            continue
        if tok.startswith(WORD_START) or word < 0:
            word += 1
        out.append(word)
    return out


def word_weights(weights: Tensor, src_words: Sequence[int], tgt_words: Sequence[int]) -> Tensor:
    """weights [T, S] of tokens -> [J, I] of words: a target word's rows averaged, a source word's columns
    summed (tokens of word -1 left out)."""
    n_src, n_tgt = max(src_words, default=-1) + 1, max(tgt_words, default=-1) + 1
    s = torch.tensor(src_words, dtype=torch.long)
    t = torch.tensor(tgt_words, dtype=torch.long)
    col = torch.zeros(weights.shape[0], n_src).index_add_(1, s.clamp(min=0), weights.float() * (s >= 0))  # (T, I)
    rows = torch.zeros(n_tgt, n_src).index_add_(0, t.clamp(min=0), col * (t >= 0).unsqueeze(1).float())
    count = torch.zeros(n_tgt).index_add_(0, t.clamp(min=0), (t >= 0).float()).clamp(min=1)
    return rows / count.unsqueeze(1)


def pharaoh(weights: Tensor, src_words: Sequence[int], tgt_words: Sequence[int]) -> list[tuple[int, int]]:
    """(source word, target word) pairs: each target word with its most attended source word."""
    w = word_weights(weights, src_words, tgt_words)
    if w.numel() == 0:
        return []
    return [(int(i), j) for j, i in enumerate(w.argmax(1).tolist())]


def format_pharaoh(pairs: Sequence[tuple[int, int]]) -> str:
    return " ".join(f"{i}-{j}" for i, j in pairs)
