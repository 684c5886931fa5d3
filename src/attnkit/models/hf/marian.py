"""Hugging Face Marian (OPUS-MT, ``MarianMTModel``) <-> attnkit Transformer: the only place Marian's weight
names live, and the BART-family layer names that M2M-100 / NLLB share (:mod:`attnkit.models.hf.m2m100`).

A Marian model is the paper's post-norm Transformer with options of the shared one (TransformerConfig):
Marian's sinusoidal table (sines in the first half of the columns), sqrt(d)-scaled embeddings, a bias on
the output (``final_logits_bias``), the decoder starting with the padding token, Swish (SiLU) or another
activation, one shared vocabulary (``model.shared``) or a source and a target one, an output projection
tied to the target embedding or not. The position tables are computed, not read; a checkpoint that stores
them (older ``pytorch_model.bin`` files, attnkit's exports) has them checked against the layouts attnkit
knows, so a directory that attnkit exported from its own run (the paper's interleaved table) reads back
exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import Tensor

from attnkit.errors import CheckpointError
from attnkit.layers.embeddings import sinusoidal_table
from attnkit.models.hf.common import read_config, read_state_dict, write_model_dir
from attnkit.models.transformer import Transformer, TransformerConfig

# attnkit name inside layer i <- Hugging Face name inside layer i (Marian, M2M-100, NLLB, BART)
LAYER_NAMES = {"self_attn_norm": "self_attn_layer_norm", "cross_attn": "encoder_attn",
               "cross_attn_norm": "encoder_attn_layer_norm", "ffn.fc1": "fc1", "ffn.fc2": "fc2",
               "ffn_norm": "final_layer_norm"}
# Hugging Face activation_function -> FeedForward's name
ACTIVATIONS = {"swish": "silu", "silu": "silu", "relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh"}
POSITION_KEYS = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")
GENERATION_FILE = "generation_config.json"


def shape_from_hf(hf: dict, source: str) -> dict:
    """The TransformerConfig fields every BART-family config.json gives (sizes, ids, dropout, activation)."""
    act = hf.get("activation_function", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{source}: activation_function {act!r} is not supported (attnkit runs "
                              f"{', '.join(sorted(ACTIVATIONS))})")
    try:
        heads, ffn = int(hf["encoder_attention_heads"]), int(hf["encoder_ffn_dim"])
        if (int(hf["decoder_attention_heads"]), int(hf["decoder_ffn_dim"])) != (heads, ffn):
            raise CheckpointError(f"{source}: encoder and decoder of different widths are not supported")
        return dict(d_model=int(hf["d_model"]), n_heads=heads, d_ff=ffn, n_encoder_layers=int(hf["encoder_layers"]),
                    n_decoder_layers=int(hf["decoder_layers"]), dropout=float(hf.get("dropout", 0.0)),
                    attn_dropout=float(hf.get("attention_dropout", 0.0)),
                    activation_dropout=float(hf.get("activation_dropout", 0.0)), activation=ACTIVATIONS[act],
                    max_len=int(hf["max_position_embeddings"]), pad_id=int(hf["pad_token_id"]),
                    bos_id=int(hf["decoder_start_token_id"]), eos_id=int(hf["eos_token_id"]),
                    scale_embeddings=bool(hf.get("scale_embedding", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: incomplete or invalid configuration ({exc})") from None


def check_ids(c: TransformerConfig, source: str) -> TransformerConfig:
    """CheckpointError when a special token id of ``c`` lies outside its vocabularies."""
    for name, i in (("pad_token_id", c.pad_id), ("eos_token_id", c.eos_id), ("decoder_start_token_id", c.bos_id)):
        if not 0 <= i < min(c.src_vocab_size, c.tgt_vocab_size):
            raise CheckpointError(f"{source}: {name} {i} is outside the vocabulary of "
                                  f"{min(c.src_vocab_size, c.tgt_vocab_size)} tokens")
    return c


def config_from_hf(hf: dict, source: str = "config.json") -> TransformerConfig:
    """TransformerConfig of a Marian config.json; CheckpointError for another model or an unsupported option."""
    if hf.get("model_type") != "marian":
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not a Marian model")
    shared = bool(hf.get("share_encoder_decoder_embeddings", True))
    try:
        vocab = int(hf["vocab_size"])
        tgt_vocab = vocab if shared else int(hf.get("decoder_vocab_size") or vocab)
        return check_ids(TransformerConfig(
            **shape_from_hf(hf, source), src_vocab_size=vocab, tgt_vocab_size=tgt_vocab, norm_first=False,
            final_norm=False, positions="sinusoidal", sinusoid="marian", share_embeddings=shared,
            tie_output=bool(hf.get("tie_word_embeddings", True)), output_bias=True, eps=1e-5), source)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: incomplete or invalid Marian configuration ({exc})") from None


def config_to_hf(c: TransformerConfig) -> dict:
    """A MarianMTModel config.json for ``c`` (post-norm models only: Marian has no final norms)."""
    if c.norm_first or c.final_norm:
        raise CheckpointError("a pre-norm Transformer (or one with final norms) cannot be written as a Marian "
                              "model, which is post-norm")
    if c.positions != "sinusoidal":
        raise CheckpointError(f"a Transformer with {c.positions} positions cannot be written as a Marian model")
    act = next(k for k, v in ACTIVATIONS.items() if v == c.activation) if c.activation in ACTIVATIONS.values() \
        else c.activation
    return {
        "architectures": ["MarianMTModel"], "model_type": "marian", "vocab_size": c.src_vocab_size,
        "decoder_vocab_size": c.tgt_vocab_size, "d_model": c.d_model, "encoder_layers": c.n_encoder_layers,
        "decoder_layers": c.n_decoder_layers, "encoder_attention_heads": c.n_heads,
        "decoder_attention_heads": c.n_heads,
        "encoder_ffn_dim": c.d_ff, "decoder_ffn_dim": c.d_ff, "max_position_embeddings": c.max_len,
        "activation_function": act, "dropout": c.dropout,
        "attention_dropout": c.dropout if c.attn_dropout is None else c.attn_dropout,
        "activation_dropout": c.dropout if c.activation_dropout is None else c.activation_dropout,
        "scale_embedding": c.scale_embeddings, "pad_token_id": c.pad_id, "eos_token_id": c.eos_id,
        "decoder_start_token_id": c.bos_id, "forced_eos_token_id": None, "bos_token_id": None,
        "share_encoder_decoder_embeddings": c.share_embeddings, "tie_word_embeddings": c.tie_output,
        "is_encoder_decoder": True,
    }


def layers_from_hf(sd: dict[str, Tensor], side: str, n: int) -> dict[str, Tensor]:
    """attnkit's ``{side}.{i}...`` weights from Hugging Face's ``model.{side}.layers.{i}...`` (popped from sd)."""
    out = {}
    prefix = f"model.{side}.layers."
    for key in [k for k in sd if k.startswith(prefix)]:
        i, rest = key[len(prefix) :].split(".", 1)
        if int(i) >= n:
            raise CheckpointError(f"weights of {side} layer {i}, but config.json has {n} layers")
        for ours, theirs in LAYER_NAMES.items():
            if rest.startswith(theirs + "."):
                rest = ours + rest[len(theirs) :]
                break
        out[f"{side}.{i}.{rest}"] = sd.pop(key)
    return out


def layers_to_hf(state: dict[str, Tensor], side: str) -> dict[str, Tensor]:
    out = {}
    for key, t in state.items():
        if not key.startswith(side + "."):
            continue
        i, rest = key[len(side) + 1 :].split(".", 1)
        for ours, theirs in sorted(LAYER_NAMES.items(), key=lambda kv: -len(kv[0])):
            if rest.startswith(ours + "."):
                rest = theirs + rest[len(ours) :]
                break
        out[f"model.{side}.layers.{i}.{rest}"] = t
    return out


def take(sd: dict[str, Tensor], *names: str) -> Tensor:
    """The first of ``names`` in sd (tied weights are stored under any of their names, or under several)."""
    for name in names:
        if name in sd:
            return sd[name]
    raise CheckpointError(f"the weights lack {names[0]!r}")


def embeddings_from_hf(sd: dict[str, Tensor], c: TransformerConfig) -> dict[str, Tensor]:
    """Source / target embeddings and the output projection (tied ones from whichever name holds them)."""
    shared = ("model.shared.weight",)
    src = take(sd, *shared, "model.encoder.embed_tokens.weight") if c.share_embeddings else \
        take(sd, "model.encoder.embed_tokens.weight", *shared)
    tgt = src if c.share_embeddings else take(sd, "model.decoder.embed_tokens.weight")
    out = {"src_embed.tokens.weight": src, "tgt_embed.tokens.weight": tgt}
    out["output.weight"] = tgt if c.tie_output else take(sd, "lm_head.weight")
    for name in (*shared, "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"):
        sd.pop(name, None)
    return out


def sinusoid_of(sd: dict[str, Tensor], c: TransformerConfig, default: str) -> str:
    """The layout of the position tables stored in sd (popped), or ``default`` when there are none."""
    tables = [sd.pop(k) for k in POSITION_KEYS if k in sd]
    if not tables:
        return default
    for layout in dict.fromkeys((default, "marian", "interleaved")):
        ref = sinusoidal_table(c.max_len, c.d_model, layout, c.position_start)
        if all(t.shape == ref.shape and torch.allclose(t.float(), ref, atol=1e-5) for t in tables):
            return layout
    raise CheckpointError("the stored position tables match no sinusoidal layout attnkit knows")


def state_from_hf(sd: dict[str, Tensor], c: TransformerConfig) -> tuple[dict[str, Tensor], TransformerConfig]:
    """attnkit state dict (and the config with the stored position layout) from a MarianMTModel one."""
    sd = dict(sd) if any(k.startswith("model.") for k in sd) else {f"model.{k}": v for k, v in sd.items()}
    sd = {("final_logits_bias" if k == "model.final_logits_bias" else k): v for k, v in sd.items()}
    bias = sd.pop("final_logits_bias", None)
    # An all-zero final_logits_bias (OPUS-MT's, attnkit's exports) is no bias: the same logits, one add less.
    c = dataclasses.replace(c, sinusoid=sinusoid_of(sd, c, c.sinusoid),
                            output_bias=bias is not None and bool(bias.any()))
    out = embeddings_from_hf(sd, c)
    if c.output_bias:
        out["output.bias"] = bias.reshape(-1)
    out |= layers_from_hf(sd, "encoder", c.n_encoder_layers) | layers_from_hf(sd, "decoder", c.n_decoder_layers)
    if sd:
        raise CheckpointError(f"unexpected Marian weights: {sorted(sd)[:5]}")
    return out, c


def state_to_hf(model: Transformer) -> dict[str, Tensor]:
    """MarianMTModel state dict of an attnkit Transformer, position tables included (they fix the layout)."""
    c, sd = model.config, model.state_dict()
    out = layers_to_hf(sd, "encoder") | layers_to_hf(sd, "decoder")
    if c.share_embeddings:
        out["model.shared.weight"] = sd["src_embed.tokens.weight"]
    else:
        out["model.encoder.embed_tokens.weight"] = sd["src_embed.tokens.weight"]
        out["model.decoder.embed_tokens.weight"] = sd["tgt_embed.tokens.weight"]
    if not c.tie_output:
        out["lm_head.weight"] = sd["output.weight"]
    bias = sd.get("output.bias")
    out["final_logits_bias"] = (torch.zeros(c.tgt_vocab_size) if bias is None else bias).reshape(1, -1)
    table = model.src_embed.position_table
    for key in POSITION_KEYS:
        out[key] = table
    return out


def load_state(model: Transformer, state: dict[str, Tensor], path: Path) -> Transformer:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n\t", 2)
        raise CheckpointError(f"{path}: the weights do not match config.json ({' '.join(first[:2])})") from None
    return model.eval()


def load_marian(path: str | Path) -> Transformer:
    """The Transformer of a Hugging Face Marian directory (eval mode); CheckpointError for a bad directory."""
    path = Path(path)
    config = config_from_hf(read_config(path), str(path / "config.json"))
    state, config = state_from_hf(read_state_dict(path), config)
    return load_state(Transformer(config), state, path)


def generation_config(path: str | Path) -> dict:
    """generation_config.json of a directory ({} when there is none), else the generation fields that old
    checkpoints keep in config.json."""
    file = Path(path) / GENERATION_FILE
    if file.is_file():
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
    return read_config(path)


def save_marian(model: Transformer, path: str | Path) -> None:
    """Write config.json, generation_config.json and model.safetensors that MarianMTModel loads."""
    path = Path(path)
    write_model_dir(path, config_to_hf(model.config), state_to_hf(model))
    c = model.config
    gen = {"decoder_start_token_id": c.bos_id, "eos_token_id": c.eos_id, "pad_token_id": c.pad_id,
           "forced_eos_token_id": None, "max_length": c.max_len}
    (path / GENERATION_FILE).write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
