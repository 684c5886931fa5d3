"""Sentence embeddings from a BERT encoder (Sentence-BERT: mean pooling + L2 normalisation), fast on CPU.

Speed comes from handling variable lengths well, not from a different model: sentences are sorted by
length and grouped so that a batch holds sentences of one length whenever possible (no padding, no mask,
so SDPA runs its unmasked kernel); mixed-length batches are padded only to their own longest sentence.
Everything runs under ``torch.inference_mode``. :class:`Embedder` is the inference object of every BERT
:class:`~attnkit.tasks.runs.Run` (``run.embed(texts)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from attnkit.data.batching import InOrder
from attnkit.derived import frozen_weights
from attnkit.models.bert import BERT, mean_pool
from attnkit.models.params import num_parameters
from attnkit.tasks import limits
from attnkit.tokenizers.wordpiece import WordPiece


class Embedded(NamedTuple):
    vectors: Tensor  # [N, E] float32, one per input text, in input order
    truncated: list[int]  # indices of texts cut to the model's maximum length
    unknown: list[int]  # indices of texts with pieces unknown to the vocabulary ([UNK])


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``: sorted by length (longest first), each
    length's sentences chunked together, and leftovers of neighbouring lengths merged (so few batches
    need padding and none is needlessly small). Every index appears exactly once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_len.setdefault(n, []).append(i)
    batches: list[list[int]] = []
    carry: list[int] = []
    for n in sorted(by_len, reverse=True):
        group = carry + by_len[n]
        full = len(group) - len(group) % batch_size
        batches += [group[i : i + batch_size] for i in range(0, full, batch_size)]
        carry = group[full:]
    if carry:
        batches.append(carry)
    return batches


def encoder_of(model: nn.Module) -> BERT:
    """The BERT encoder inside a BERT-with-head model (or the model itself)."""
    return model if isinstance(model, BERT) else model.bert


@torch.inference_mode()
@frozen_weights()  # the weights' derived copies are made once for all batches
def embed_sentences(
    model: nn.Module,
    tokenizer: WordPiece,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    normalize: bool = True,
    on_rows: Callable[[int, Tensor], None] | None = None,
) -> Embedded:
    """Mean-pooled (L2-normalised) sentence embeddings [N, E] of ``texts`` (an empty text gives the
    embedding of ``[CLS] [SEP]``). ``max_length`` defaults to the model's maximum positions.
    ``on_rows(start, vectors)``: the vectors of texts start, start+1, ... as soon as they and every text
    before them are done (the batches are the same, taken in the order of their first text). InputError
    before any work when a batch would not fit in memory (:mod:`attnkit.tasks.limits`)."""
    bert = encoder_of(model)
    was_training = bert.training
    bert.eval()
    limit = min(max_length or bert.config.max_len, bert.config.max_len)
    enc = tokenizer.encode(texts, max_length=limit)
    batches = length_batches([len(s) for s in enc.ids], batch_size)
    shape = limits.shape_of(bert.config, num_parameters(bert))
    need = max((limits.forward_bytes(shape, len(b), len(enc.ids[b[0]])) for b in batches), default=0)
    limits.check_memory(need, "one batch", [limits.Option("batch_size", batch_size, 32),
                                            limits.Option("max_length", limit, 128)],
                        device=next(bert.parameters()).device)
    out = torch.empty(len(texts), bert.config.d_model)
    report = InOrder(out, on_rows)
    for batch in sorted(batches, key=min) if on_rows is not None else batches:
        ids, mask = tokenizer.pad([enc.ids[i] for i in batch])  # (b, T)
        if bool(mask.all()):
            mask = None  # one length: no padding, no mask
        hidden = bert.encode(ids, mask).hidden  # (b, T, E)
        out[batch] = mean_pool(hidden, mask, normalize).float()
        report(batch)
    bert.train(was_training)
    return Embedded(out, enc.truncated, enc.unknown)


class Embedder:
    """Sentence embeddings with a BERT (or BERT-with-head) model and its WordPiece tokenizer."""

    def __init__(self, model: nn.Module, tokenizer: WordPiece) -> None:
        self.model, self.tokenizer = model, tokenizer

    @property
    def max_positions(self) -> int:
        return encoder_of(self.model).config.max_len

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, max_length: int | None = None,
              normalize: bool = True, on_rows: Callable[[int, Tensor], None] | None = None) -> Embedded:
        """See :func:`embed_sentences`."""
        return embed_sentences(self.model, self.tokenizer, texts, batch_size=batch_size, max_length=max_length,
                               normalize=normalize, on_rows=on_rows)
