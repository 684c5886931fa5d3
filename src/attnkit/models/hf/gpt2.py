"""Hugging Face GPT-2 <-> attnkit GPT: the only place GPT-2's weight names and layouts live.

GPT-2 stores its projections as ``Conv1D`` (weight [in, out], y = x W + b), the transpose of
``nn.Linear``'s [out, in], and fuses the query, key and value projections into one ``c_attn`` of width
3E (q, k, v in that order). Checkpoints come with (``transformer.h.0...``, GPT2LMHeadModel) or without
(``h.0...``, GPT2Model, as OpenAI's original upload) the ``transformer.`` prefix; the ``attn.bias`` /
``attn.masked_bias`` buffers of old checkpoints are causal masks, not weights, and are ignored.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from attnkit.errors import CheckpointError
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.common import read_config, read_state_dict, write_model_dir
from attnkit.tokenizers.bytebpe import load_gpt2_tokenizer, save_gpt2_tokenizer
from attnkit.tokenizers.char import TextTokenizer

_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# (attnkit name inside layer i, GPT-2 name inside block i, is a Conv1D weight to transpose)
_LAYER_MAP = [
    ("self_attn_norm.weight", "ln_1.weight", False),
    ("self_attn_norm.bias", "ln_1.bias", False),
    ("self_attn.out_proj.weight", "attn.c_proj.weight", True),
    ("self_attn.out_proj.bias", "attn.c_proj.bias", False),
    ("ffn_norm.weight", "ln_2.weight", False),
    ("ffn_norm.bias", "ln_2.bias", False),
    ("ffn.fc1.weight", "mlp.c_fc.weight", True),
    ("ffn.fc1.bias", "mlp.c_fc.bias", False),
    ("ffn.fc2.weight", "mlp.c_proj.weight", True),
    ("ffn.fc2.bias", "mlp.c_proj.bias", False),
]
_QKV = ("q_proj", "k_proj", "v_proj")
# Hugging Face activation_function -> GPTConfig.activation
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def config_from_hf(hf: dict) -> GPTConfig:
    """GPTConfig from a GPT-2 config.json; CheckpointError for a model or option attnkit does not run."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"not a GPT-2 checkpoint (model_type {hf.get('model_type')!r})")
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise CheckpointError(f"GPT-2 activation {act!r} is not supported (attnkit runs {sorted(_ACTIVATIONS)})")
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if hf.get(flag):
            raise CheckpointError(f"GPT-2 option {flag}=true is not supported")
    if hf.get("scale_attn_weights", True) is False:
        raise CheckpointError("GPT-2 option scale_attn_weights=false is not supported")
    try:
        return GPTConfig(
            vocab_size=int(hf["vocab_size"]),
            max_len=int(hf["n_positions"]),
            n_layers=int(hf["n_layer"]),
            n_heads=int(hf["n_head"]),
            d_model=int(hf["n_embd"]),
            d_ff=hf.get("n_inner"),
            dropout=float(hf.get("resid_pdrop", 0.0)),
            bias=True,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            activation=_ACTIVATIONS[act],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"incomplete or invalid GPT-2 config.json ({exc})") from None


def config_to_hf(c: GPTConfig, eos_id: int | None = None) -> dict:
    """A GPT-2 config.json for ``c`` (dropout at inference is irrelevant; it is kept for training)."""
    eos = c.vocab_size - 1 if eos_id is None else eos_id
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "activation_function": "gelu_new" if c.activation == "gelu_tanh" else c.activation,
        "vocab_size": c.vocab_size, "n_positions": c.max_len, "n_layer": c.n_layers, "n_head": c.n_heads,
        "n_embd": c.d_model, "n_inner": c.d_ff, "layer_norm_epsilon": c.eps,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "tie_word_embeddings": c.tie_embeddings, "scale_attn_weights": True, "bos_token_id": eos,
        "eos_token_id": eos, "initializer_range": 0.02,
    }


def state_from_hf(sd: dict[str, Tensor], c: GPTConfig) -> dict[str, Tensor]:
    """attnkit GPT state dict from a GPT-2 one (either prefix); CheckpointError naming missing weights."""
    sd = {k.removeprefix("transformer."): v for k, v in sd.items() if not k.endswith(_IGNORED_SUFFIXES)}
    out: dict[str, Tensor] = {}

    def take(name: str) -> Tensor:
        if name not in sd:
            raise CheckpointError(f"GPT-2 weights lack {name!r}")
        return sd.pop(name)

    out["embed.tokens.weight"] = take("wte.weight")
    out["embed.position.weight"] = take("wpe.weight")
    for i in range(c.n_layers):
        ours, theirs = f"layers.{i}.", f"h.{i}."
        for mine, hf_name, conv in _LAYER_MAP:
            w = take(theirs + hf_name)
            out[ours + mine] = w.t() if conv else w
        qkv_w, qkv_b = take(theirs + "attn.c_attn.weight").t(), take(theirs + "attn.c_attn.bias")  # (3E, E), (3E,)
        for proj, w, b in zip(_QKV, qkv_w.chunk(3, 0), qkv_b.chunk(3, 0), strict=True):
            out[f"{ours}self_attn.{proj}.weight"], out[f"{ours}self_attn.{proj}.bias"] = w, b
    out["norm.weight"], out["norm.bias"] = take("ln_f.weight"), take("ln_f.bias")
    head = sd.pop("lm_head.weight", None)
    if c.tie_embeddings:
        out["lm_head.weight"] = out["embed.tokens.weight"]
    elif head is None:
        raise CheckpointError("GPT-2 weights lack 'lm_head.weight' (tie_word_embeddings is false)")
    else:
        out["lm_head.weight"] = head
    if sd:
        raise CheckpointError(f"unexpected GPT-2 weights: {sorted(sd)[:5]}")
    return {k: v.contiguous() for k, v in out.items()}


def state_to_hf(model: GPT) -> dict[str, Tensor]:
    """GPT2LMHeadModel state dict (``transformer.`` prefix) from an attnkit GPT. A model without biases
    gets zero biases, which computes the same function."""
    c, sd = model.config, model.state_dict()

    def get(name: str) -> Tensor:
        if name in sd or not name.endswith(".bias"):
            return sd[name]
        weight = sd[name.removesuffix(".bias") + ".weight"]
        return weight.new_zeros(weight.shape[0])  # bias=False: a zero bias computes the same function

    out: dict[str, Tensor] = {
        "transformer.wte.weight": sd["embed.tokens.weight"],
        "transformer.wpe.weight": sd["embed.position.weight"],
    }
    for i in range(c.n_layers):
        ours, theirs = f"layers.{i}.", f"transformer.h.{i}."
        for mine, hf_name, conv in _LAYER_MAP:
            w = get(ours + mine)
            out[theirs + hf_name] = w.t() if conv else w
        qkv = [f"{ours}self_attn.{p}" for p in _QKV]
        out[theirs + "attn.c_attn.weight"] = torch.cat([get(p + ".weight") for p in qkv], 0).t()  # (E, 3E)
        out[theirs + "attn.c_attn.bias"] = torch.cat([get(p + ".bias") for p in qkv], 0)
    out["transformer.ln_f.weight"] = sd["norm.weight"]
    out["transformer.ln_f.bias"] = get("norm.bias")
    if not c.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def load_gpt2(path: str | Path) -> tuple[GPT, TextTokenizer | None]:
    """A GPT and its tokenizer (or None) from a Hugging Face GPT-2 directory."""
    config = config_from_hf(read_config(path))
    model = GPT(config)
    state = state_from_hf(read_state_dict(path), config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: GPT-2 weights do not match config.json ({exc})") from None
    model.eval()
    return model, load_gpt2_tokenizer(path)


def save_gpt2(model: GPT, path: str | Path, tokenizer: TextTokenizer | None = None) -> None:
    """Write config.json + model.safetensors (+ the tokenizer) that ``GPT2LMHeadModel`` loads."""
    eos = tokenizer.eos_id if tokenizer is not None else None
    write_model_dir(path, config_to_hf(model.config, eos), state_to_hf(model))
    if tokenizer is not None:
        save_gpt2_tokenizer(tokenizer, path)
