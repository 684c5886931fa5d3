"""Open a model for the viewer and collect its attention on a text: attnkit translation runs (Transformer
or RNN), BERT runs, and Hugging Face GPT-2 or BERT directories.

``attention_maps(path, text, target)`` is the library form of ``attnkit viz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit.errors import CheckpointError, InputError
from attnkit.tasks.runs import open_run
from attnkit.viz.weights import AttentionMaps, bert_weights, gpt_weights, rnn_weights, to_maps, transformer_weights


@dataclass
class Viewable:
    """A model ready for the viewer: family "translation" | "gpt" | "bert", the model, and what it
    needs to turn text into ids and ids into labels."""

    family: str
    model: nn.Module
    tokenizer: Any
    extra: Any = None  # translation: the Translator (target tokenizer, decoding)
    run: Any = None  # the Run it came from (its precision)


# The viewer's kind of each run family (see attnkit.tasks.runs): what attention it has, how text is read.
VIEWS = {"translation": "translation", "gpt": "gpt", "bert": "bert", "bert-mlm": "bert", "bert-classify": "bert"}


def open_model(path: str | Path, dtype: str = "fp32") -> Viewable:
    """An attnkit run directory (run.json) or a Hugging Face directory (config.json), through
    :func:`attnkit.tasks.runs.open_run` (in ``dtype``)."""
    run = open_run(path, dtype=dtype)
    view = VIEWS.get(run.family)
    if view is None:
        raise CheckpointError(f"{path}: 'attnkit viz' cannot show a {run.family!r} run (translation, GPT and BERT "
                              "runs, and Hugging Face GPT-2 / BERT directories, are supported)")
    return Viewable(view, run.model.eval(), run.tokenizer, run.inference if view == "translation" else None, run)


def _labels(tokenizer: Any, ids: list[int]) -> list[str]:
    inner = getattr(tokenizer, "tokenizer", tokenizer)
    out = []
    for i in ids:
        tok = inner.id_to_token(i)
        out.append((tok if tok is not None else str(i)).replace("\u0120", "\u2581").replace("\u010a", "\\n"))
    return out


def attention_maps(view: Viewable, text: str, target: str | None = None, max_tokens: int = 256) -> AttentionMaps:
    """The attention of ``view``'s model on ``text`` (a translation model on ``text`` -> ``target``; without
    a target, its own greedy translation). Inputs longer than ``max_tokens`` tokens are an InputError."""
    if not text.strip():
        raise InputError("--text is empty")
    if view.family == "translation":
        return _translation_maps(view, text, target, max_tokens)
    if target is not None:
        raise InputError(f"--target is for translation models; this is a {view.family.upper()} model")
    if view.family == "gpt":
        ids = view.tokenizer.encode(text)
        _check_len(ids, min(max_tokens, view.model.config.max_len))
        labels = _labels(view.tokenizer, ids)
        collected = gpt_weights(view.model, torch.tensor([ids]))
        return to_maps(collected, "GPT", {"decoder": (labels, labels)})
    ids = view.tokenizer.encode([text]).ids[0]
    _check_len(ids, max_tokens)
    labels = _labels(view.tokenizer, ids)
    collected = bert_weights(view.model, torch.tensor([ids]))
    return to_maps(collected, "BERT", {"encoder": (labels, labels)})


def _translation_maps(view: Viewable, text: str, target: str | None, max_tokens: int) -> AttentionMaps:
    translator = view.extra
    src = translator.src_tok.encode(text)
    _check_len(src, min(max_tokens, translator.max_len))
    if target is None:
        tgt = translator.translate_ids([src])[0]
    else:
        tgt = translator.tgt_tok.encode(target)
    return translation_maps(view, src, tgt)


def translation_maps(view: Viewable, src: list[int], tgt: list[int]) -> AttentionMaps:
    """The attention of a translation model reading source ids ``src`` and target ids ``tgt`` (no BOS/EOS)."""
    from attnkit.models.rnn import RNNSeq2Seq
    from attnkit.tokenizers.subword import BOS_ID

    translator = view.extra
    # The decoder reads BOS y1..yn and predicts y1..yn EOS: label each query by the token it reads.
    tgt_in = [BOS_ID] + tgt
    _check_len(tgt_in, translator.max_len)
    src_labels = _labels(translator.src_tok, src)
    tgt_labels = _labels(translator.tgt_tok, tgt_in)
    src_t, tgt_t = torch.tensor([src]), torch.tensor([tgt_in])
    labels = {"encoder": (src_labels, src_labels), "decoder": (tgt_labels, tgt_labels),
              "cross": (tgt_labels, src_labels)}
    if isinstance(view.model, RNNSeq2Seq):
        return to_maps(rnn_weights(view.model, src_t, tgt_t), "RNN encoder-decoder", labels)
    return to_maps(transformer_weights(view.model, src_t, tgt_t), "Transformer", labels)


def _check_len(ids: list[int], limit: int) -> None:
    if len(ids) > limit:
        raise InputError(f"the text has {len(ids)} tokens; the viewer takes at most {limit}")
    if not ids:
        raise InputError("the text has no tokens")
