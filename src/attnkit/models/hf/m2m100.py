"""Hugging Face M2M-100 / NLLB-200 (``M2M100ForConditionalGeneration``) -> attnkit Transformer.

The same BART-family layer names as Marian (:mod:`attnkit.models.hf.marian`), with the options of the
shared Transformer that fairseq's multilingual models use: pre-norm layers and a final LayerNorm after each
stack (``model.encoder.layer_norm``), fairseq's sinusoidal table numbered from ``pad_token_id + 1``
(positions of real tokens in a right-padded batch), sqrt(d)-scaled embeddings, one shared vocabulary and an
output projection tied to it, no output bias. NLLB-200 checkpoints are M2M-100 models with another
tokenizer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import Tensor

from attnkit.errors import CheckpointError
from attnkit.models.hf.common import read_config, read_state_dict
from attnkit.models.hf.marian import (
    check_ids,
    embeddings_from_hf,
    layers_from_hf,
    load_state,
    shape_from_hf,
    sinusoid_of,
)
from attnkit.models.transformer import Transformer, TransformerConfig

_FINAL_NORMS = {"encoder_norm": "model.encoder.layer_norm", "decoder_norm": "model.decoder.layer_norm"}


def config_from_hf(hf: dict, source: str = "config.json") -> TransformerConfig:
    """TransformerConfig of an M2M-100 / NLLB config.json."""
    if hf.get("model_type") != "m2m_100":
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not an M2M-100 model")
    shape = shape_from_hf(hf, source)
    try:
        vocab = int(hf["vocab_size"])
        return check_ids(TransformerConfig(
            **shape, src_vocab_size=vocab, tgt_vocab_size=vocab, norm_first=True, final_norm=True,
            positions="sinusoidal", sinusoid="fairseq", position_start=shape["pad_id"] + 1, share_embeddings=True,
            tie_output=bool(hf.get("tie_word_embeddings", True)), eps=1e-5), source)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: incomplete or invalid M2M-100 configuration ({exc})") from None


def state_from_hf(sd: dict[str, Tensor], c: TransformerConfig) -> tuple[dict[str, Tensor], TransformerConfig]:
    """attnkit state dict (and config) from an M2M100ForConditionalGeneration one."""
    sd = dict(sd) if any(k.startswith("model.") for k in sd) else {f"model.{k}": v for k, v in sd.items()}
    for key in ("model.encoder.embed_positions._float_tensor", "model.decoder.embed_positions._float_tensor"):
        sd.pop(key, None)  # fairseq's dtype marker in old conversions
    c = dataclasses.replace(c, sinusoid=sinusoid_of(sd, c, c.sinusoid))
    out = embeddings_from_hf(sd, c)
    for ours, theirs in _FINAL_NORMS.items():
        for p in ("weight", "bias"):
            if f"{theirs}.{p}" not in sd:
                raise CheckpointError(f"the weights lack {theirs}.{p!r}")
            out[f"{ours}.{p}"] = sd.pop(f"{theirs}.{p}")
    out |= layers_from_hf(sd, "encoder", c.n_encoder_layers) | layers_from_hf(sd, "decoder", c.n_decoder_layers)
    if sd:
        raise CheckpointError(f"unexpected M2M-100 weights: {sorted(sd)[:5]}")
    return out, c


def load_m2m100(path: str | Path) -> Transformer:
    """The Transformer of a Hugging Face M2M-100 / NLLB directory (eval mode)."""
    path = Path(path)
    config = config_from_hf(read_config(path), str(path / "config.json"))
    state, config = state_from_hf(read_state_dict(path), config)
    return load_state(Transformer(config), state, path)
