"""Hugging Face BERT directories <-> attnkit's BERT: the only place BERT's Hugging Face names live.

Reads ``BertModel``, ``BertForMaskedLM``, ``BertForPreTraining`` and ``BertForSequenceClassification``
checkpoints (keys with or without the ``bert.`` prefix; old ``gamma``/``beta`` LayerNorm names) and writes
directories that ``transformers`` loads with ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit.errors import CheckpointError
from attnkit.models.bert import (
    BERT,
    BERTConfig,
    BERTForMaskedLM,
    BERTForSequenceClassification,
    BERTForTokenClassification,
)
from attnkit.models.hf.common import read_config, read_state_dict, write_model_dir
from attnkit.tokenizers.wordpiece import WordPiece

# attnkit name (inside a BERT encoder) <- Hugging Face name (inside BertModel), per layer and global.
_LAYER = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_norm": "attention.output.LayerNorm",
    "ffn.fc1": "intermediate.dense",
    "ffn.fc2": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
_GLOBAL = {
    "embeddings.tokens": "embeddings.word_embeddings",
    "embeddings.position": "embeddings.position_embeddings",
    "embeddings.token_types": "embeddings.token_type_embeddings",
    "embeddings.norm": "embeddings.LayerNorm",
    "pooler": "pooler.dense",
}
_MLM = {"mlm.dense": "cls.predictions.transform.dense", "mlm.norm": "cls.predictions.transform.LayerNorm"}
_HEADS = {"classifier": "classifier"}


def config_from_hf(hf: dict, source: str | Path = "config.json") -> BERTConfig:
    """A BERTConfig from a Hugging Face BertConfig dictionary; CheckpointError for other architectures."""
    if hf.get("model_type", "bert") != "bert":
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not a BERT model")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported (only 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{source}: only absolute position embeddings are supported")
    try:
        return BERTConfig(
            vocab_size=int(hf["vocab_size"]),
            n_layers=int(hf["num_hidden_layers"]),
            n_heads=int(hf["num_attention_heads"]),
            d_model=int(hf["hidden_size"]),
            d_ff=int(hf["intermediate_size"]),
            max_len=int(hf.get("max_position_embeddings", 512)),
            type_vocab_size=int(hf.get("type_vocab_size", 2)),
            dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attn_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            eps=float(hf.get("layer_norm_eps", 1e-12)),
            pad_id=int(hf.get("pad_token_id") or 0),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: incomplete or invalid BERT configuration ({exc})") from None


def config_to_hf(config: BERTConfig, architecture: str = "BertModel", num_labels: int | None = None) -> dict:
    hf = {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "max_position_embeddings": config.max_len,
        "type_vocab_size": config.type_vocab_size,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attn_dropout,
        "layer_norm_eps": config.eps,
        "pad_token_id": config.pad_id,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
    }
    if num_labels is not None:
        hf["num_labels"] = num_labels
    return hf


def _name_pairs(config: BERTConfig, prefix: str, hf_prefix: str) -> list[tuple[str, str]]:
    """(attnkit name, Hugging Face name) of every encoder parameter, without weight/bias suffixes."""
    pairs = [(prefix + ours, hf_prefix + theirs) for ours, theirs in _GLOBAL.items()]
    for i in range(config.n_layers):
        pairs += [(f"{prefix}layers.{i}.{o}", f"{hf_prefix}encoder.layer.{i}.{t}") for o, t in _LAYER.items()]
    return pairs


def _normalise_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Old TensorFlow-converted checkpoints call LayerNorm's parameters gamma/beta."""
    out = {}
    for k, v in state.items():
        if k.endswith(".gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith(".beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


def _encoder_prefix(model: nn.Module) -> str:
    return "" if isinstance(model, BERT) else "bert."


def _full_pairs(model: nn.Module, hf_prefix: str) -> list[tuple[str, str]]:
    """(attnkit name, Hugging Face name) of every tensor of ``model`` that Hugging Face stores."""
    pairs = _name_pairs(model.config, _encoder_prefix(model), hf_prefix)
    if isinstance(model, BERTForMaskedLM):
        pairs += list(_MLM.items())
    if isinstance(model, BERTForSequenceClassification | BERTForTokenClassification):
        pairs += list(_HEADS.items())
    ours = model.state_dict()
    full = [(o + s, t + s) for o, t in pairs for s in (".weight", ".bias") if o + s in ours]
    if isinstance(model, BERTForMaskedLM):
        full.append(("mlm.bias", "cls.predictions.bias"))
    return full


_OPTIONAL = ("pooler.", "bert.pooler.", "classifier.")  # absent from some checkpoints: keep fresh ones


def state_from_hf(model: nn.Module, hf_state: dict[str, Tensor], source: str | Path) -> None:
    """Copy Hugging Face tensors into ``model``; every attnkit tensor with a counterpart must be found,
    except a pooler or classifier that the checkpoint lacks (they keep their fresh initialisation)."""
    hf_state = _normalise_keys(hf_state)
    hf_prefix = "bert." if any(k.startswith("bert.") for k in hf_state) else ""
    ours = model.state_dict()
    copied: dict[str, Tensor] = {}
    for o, t in _full_pairs(model, hf_prefix):
        if t not in hf_state:
            if o.startswith(_OPTIONAL):
                continue
            raise CheckpointError(f"{source}: missing tensor {t} (needed for {o})")
        if hf_state[t].shape != ours[o].shape:
            raise CheckpointError(
                f"{source}: {t} has shape {tuple(hf_state[t].shape)}, expected {tuple(ours[o].shape)}"
            )
        copied[o] = hf_state[t]
    decoder = hf_state.get("cls.predictions.decoder.weight")
    if isinstance(model, BERTForMaskedLM) and decoder is not None:
        if not torch.equal(decoder, copied["bert.embeddings.tokens.weight"]):
            raise CheckpointError(f"{source}: the MLM decoder is not tied to the word embeddings (unsupported)")
    with torch.no_grad():
        for name, tensor in copied.items():
            ours[name].copy_(tensor.to(ours[name].dtype))


def state_to_hf(model: nn.Module) -> dict[str, Tensor]:
    """Hugging Face names for every tensor of ``model`` (the tied MLM decoder is left to ``transformers``)."""
    ours = model.state_dict()
    hf_prefix = "" if isinstance(model, BERT) else "bert."
    return {t: ours[o] for o, t in _full_pairs(model, hf_prefix)}


def load_bert(path: str | Path, cls: type[nn.Module] = BERT,
              num_labels: int | None = None) -> tuple[nn.Module, WordPiece | None]:
    """``cls`` (BERT or a BERT-with-head class) from a Hugging Face directory, in eval mode, and the
    directory's WordPiece tokenizer (tokenizer.json or vocab.txt; None when it has neither)."""
    path = Path(path)
    config = config_from_hf(read_config(path), path / "config.json")
    state = read_state_dict(path)
    if cls is BERT:
        has_pooler = any(k.endswith("pooler.dense.weight") for k in state)
        model: nn.Module = BERT(config, pooler=has_pooler)
    elif cls in (BERTForSequenceClassification, BERTForTokenClassification):
        model = cls(config, num_labels if num_labels is not None else 2)
    else:
        model = cls(config)
    state_from_hf(model, state, path)
    has_tokenizer = (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()
    return model.eval(), WordPiece.from_dir(path) if has_tokenizer else None


def save_bert(model: nn.Module, path: str | Path, tokenizer: WordPiece | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` loadable by ``transformers``' matching Bert class,
    and the tokenizer's files (a :class:`~attnkit.tokenizers.wordpiece.WordPiece`) if given."""
    arch = {
        BERT: "BertModel",
        BERTForMaskedLM: "BertForMaskedLM",
        BERTForSequenceClassification: "BertForSequenceClassification",
        BERTForTokenClassification: "BertForTokenClassification",
    }.get(type(model))
    if arch is None:
        raise ValueError(f"cannot convert a {type(model).__name__} to Hugging Face BERT")
    write_model_dir(path, config_to_hf(model.config, arch, getattr(model, "num_labels", None)), state_to_hf(model))
    if tokenizer is not None:
        tokenizer.save(path, model.config.max_len)
