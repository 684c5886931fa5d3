"""Hugging Face Llama, Qwen2 and Mistral <-> attnkit GPT: one converter for the Llama lineage, the only
place these checkpoints' weight and config names live.

The three are one architecture with different defaults (``LlamaForCausalLM``, ``Qwen2ForCausalLM``,
``MistralForCausalLM``): pre-norm RMSNorm layers, SwiGLU MLPs (``gate_proj``, ``up_proj``,
``down_proj``), rotary positions in the rotate-half layout (Hugging Face's conversion already permuted
Meta's interleaved q/k weights into it), grouped-query attention; Qwen2 adds biases on q/k/v only (and
usually ties the embeddings), Mistral a sliding window. Every one of them is a
:class:`~attnkit.models.gpt.GPTConfig` with ``norm="rmsnorm", activation="swiglu", positions="rope"``;
the weights map one to one (no transposes, no fused matrices)::

    model.embed_tokens            embed.tokens
    model.layers.i.self_attn.o_proj   layers.i.self_attn.out_proj   (q/k/v_proj keep their names)
    model.layers.i.mlp.{gate,up,down}_proj   layers.i.ffn.{gate,fc1,fc2}
    model.layers.i.{input,post_attention}_layernorm   layers.i.{self_attn,ffn}_norm
    model.norm, lm_head           norm, lm_head

Config options attnkit does not compute (other RoPE types, a partial rotary width, per-layer windows,
attention and MLP biases that differ, a head width other than hidden_size / heads) raise a
CheckpointError naming them.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from attnkit.errors import CheckpointError
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.common import read_config, read_state_dict, write_model_dir
from attnkit.tokenizers.pretrained import PretrainedTokenizer, load_pretrained_tokenizer

MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
# (attnkit module inside layer i, Hugging Face module inside model.layers.i); parameters keep their names
_LAYER_MAP = [
    ("self_attn.q_proj", "self_attn.q_proj"),
    ("self_attn.k_proj", "self_attn.k_proj"),
    ("self_attn.v_proj", "self_attn.v_proj"),
    ("self_attn.out_proj", "self_attn.o_proj"),
    ("ffn.gate", "mlp.gate_proj"),
    ("ffn.fc1", "mlp.up_proj"),
    ("ffn.fc2", "mlp.down_proj"),
    ("self_attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
]
_TOP_MAP = [("embed.tokens", "model.embed_tokens"), ("norm", "model.norm"), ("lm_head", "lm_head")]


def _rope(hf: dict) -> tuple[float, dict | None]:
    """(theta, GPTConfig.rope_scaling) from ``rope_parameters`` (transformers 5) or ``rope_theta`` +
    ``rope_scaling`` (earlier files)."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
        raise CheckpointError("RoPE with partial_rotary_factor != 1 is not supported")
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, {"kind": "linear", "factor": float(params["factor"])}
    if kind == "llama3":
        return theta, {"kind": "llama3", "factor": float(params["factor"]),
                       "low_freq_factor": float(params["low_freq_factor"]),
                       "high_freq_factor": float(params["high_freq_factor"]),
                       "original_max_len": int(params["original_max_position_embeddings"])}
    raise CheckpointError(f"RoPE type {kind!r} is not supported (attnkit runs default, linear and llama3)")


def _biases(hf: dict, model_type: str) -> tuple[bool, bool | None]:
    """(GPTConfig.bias, GPTConfig.qkv_bias)."""
    if model_type == "qwen2":
        return False, True  # Qwen2: q/k/v biases always, none elsewhere
    if model_type == "mistral":
        return False, None
    attn, mlp = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attn != mlp:
        raise CheckpointError(f"Llama with attention_bias={attn} and mlp_bias={mlp} is not supported")
    return attn, None


def _window(hf: dict, model_type: str) -> int | None:
    if model_type == "mistral":
        return None if hf.get("sliding_window") is None else int(hf["sliding_window"])
    if model_type == "qwen2" and hf.get("use_sliding_window"):
        raise CheckpointError("Qwen2 with use_sliding_window=true (a window on some layers) is not supported")
    return None


def config_from_hf(hf: dict) -> GPTConfig:
    """GPTConfig from a Llama / Qwen2 / Mistral config.json; CheckpointError for what attnkit does not run."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"not a Llama, Qwen2 or Mistral checkpoint (model_type {model_type!r})")
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{model_type} hidden_act {hf.get('hidden_act')!r} is not supported (only silu)")
    try:
        d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        if hf.get("head_dim") not in (None, d // heads):
            raise CheckpointError(f"head_dim {hf['head_dim']} != hidden_size / num_attention_heads is not supported")
        theta, scaling = _rope(hf)
        bias, qkv_bias = _biases(hf, model_type)
        return GPTConfig(
            vocab_size=int(hf["vocab_size"]), max_len=int(hf["max_position_embeddings"]),
            n_layers=int(hf["num_hidden_layers"]), n_heads=heads, d_model=d, d_ff=int(hf["intermediate_size"]),
            dropout=0.0, bias=bias, tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            eps=float(hf.get("rms_norm_eps", 1e-6)), activation="swiglu", norm="rmsnorm", positions="rope",
            n_kv_heads=int(hf.get("num_key_value_heads") or heads), window=_window(hf, model_type),
            qkv_bias=qkv_bias, rope_theta=theta, rope_scaling=scaling,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"incomplete or invalid {model_type} config.json ({exc})") from None


def model_type_of(c: GPTConfig) -> str:
    """The Hugging Face architecture that computes ``c``: qwen2 (q/k/v biases only), mistral (a window) or
    llama; CheckpointError for a GPT that none of them is."""
    llama_like = (c.norm, c.activation, c.positions) == ("rmsnorm", "swiglu", "rope")
    if not llama_like or c.rope_interleaved or c.qk_norm:
        raise CheckpointError("only GPTs with rmsnorm, swiglu, rotate-half rope and no q/k norm export as "
                              "Llama / Qwen2 / Mistral (GPT-2-style models: save_gpt2)")
    qkv_only = c.qkv_bias is True and not c.bias
    if c.window is not None:
        if c.bias or c.qkv_bias or c.rope_scaling is not None:
            raise CheckpointError("a sliding-window model exports as Mistral, which has no biases or RoPE scaling")
        return "mistral"
    if qkv_only:
        if c.rope_scaling is not None:
            raise CheckpointError("a model with q/k/v biases exports as Qwen2, which has no RoPE scaling")
        return "qwen2"
    if c.qkv_bias not in (None, c.bias):
        raise CheckpointError("q/k/v biases unlike the other linears' are Qwen2's (bias=False, qkv_bias=True)")
    return "llama"


def _rope_parameters(c: GPTConfig) -> dict:
    s = c.scaling()
    if s is None:
        return {"rope_type": "default", "rope_theta": c.rope_theta}
    if s.kind == "linear":
        return {"rope_type": "linear", "rope_theta": c.rope_theta, "factor": s.factor}
    return {"rope_type": "llama3", "rope_theta": c.rope_theta, "factor": s.factor,
            "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_len}


def config_to_hf(c: GPTConfig, bos_id: int | None = None, eos_ids: tuple[int, ...] = ()) -> dict:
    """The config.json of the architecture that computes ``c`` (see :func:`model_type_of`). The RoPE
    parameters are written both ways (``rope_parameters`` for transformers 5, ``rope_theta`` and
    ``rope_scaling`` for earlier versions)."""
    model_type = model_type_of(c)
    rope = _rope_parameters(c)
    legacy_scaling = None if rope["rope_type"] == "default" else {k: v for k, v in rope.items() if k != "rope_theta"}
    hf = {
        "architectures": [MODEL_TYPES[model_type]], "model_type": model_type, "vocab_size": c.vocab_size,
        "hidden_size": c.d_model, "intermediate_size": c.ffn_dim, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads or c.n_heads,
        "head_dim": c.head_dim, "hidden_act": "silu", "max_position_embeddings": c.max_len,
        "rms_norm_eps": c.eps, "tie_word_embeddings": c.tie_embeddings, "rope_parameters": rope,
        "rope_theta": c.rope_theta, "rope_scaling": legacy_scaling, "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float32",
        "bos_token_id": bos_id, "eos_token_id": (list(eos_ids) if len(eos_ids) > 1 else eos_ids[0]) if eos_ids
        else None,
    }
    if model_type == "llama":
        hf.update(attention_bias=c.bias, mlp_bias=c.bias)
    elif model_type == "mistral":
        hf["sliding_window"] = c.window
    else:
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=c.n_layers)
    return hf


def _names(c: GPTConfig) -> list[tuple[str, str]]:
    """(attnkit module, Hugging Face module) of every module that holds weights."""
    pairs = [(f"layers.{i}.{mine}", f"model.layers.{i}.{theirs}") for i in range(c.n_layers)
             for mine, theirs in _LAYER_MAP]
    return pairs + _TOP_MAP


def state_from_hf(sd: dict[str, Tensor], c: GPTConfig) -> dict[str, Tensor]:
    """attnkit GPT state dict from a Llama-lineage one; CheckpointError naming missing or unexpected
    weights. A tied checkpoint's lm_head.weight, if written, is the embedding and is dropped."""
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # a buffer in old checkpoints
    if c.tie_embeddings:
        sd.pop("lm_head.weight", None)
    out: dict[str, Tensor] = {}
    for mine, theirs in _names(c):
        if mine == "lm_head" and c.tie_embeddings:
            out["lm_head.weight"] = out["embed.tokens.weight"]
            continue
        if f"{theirs}.weight" not in sd:
            raise CheckpointError(f"weights lack {theirs}.weight")
        out[f"{mine}.weight"] = sd.pop(f"{theirs}.weight")
        if f"{theirs}.bias" in sd:
            out[f"{mine}.bias"] = sd.pop(f"{theirs}.bias")
    if sd:
        raise CheckpointError(f"unexpected weights: {sorted(sd)[:5]}")
    return out


def state_to_hf(model: GPT) -> dict[str, Tensor]:
    """The ``*ForCausalLM`` state dict of an attnkit GPT (no lm_head.weight when tied)."""
    c, sd = model.config, model.state_dict()
    out: dict[str, Tensor] = {}
    for mine, theirs in _names(c):
        for param in ("weight", "bias"):
            if f"{mine}.{param}" in sd:
                out[f"{theirs}.{param}"] = sd[f"{mine}.{param}"]
    if c.tie_embeddings:
        del out["lm_head.weight"]
    return out


def _stop_ids(path: Path, hf: dict) -> tuple[int, ...]:
    """The end-of-generation ids: generation_config.json's eos_token_id, else config.json's."""
    eos = hf.get("eos_token_id")
    gen = path / "generation_config.json"
    if gen.is_file():
        try:
            eos = json.loads(gen.read_text(encoding="utf-8")).get("eos_token_id", eos)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise CheckpointError(f"{gen}: not a JSON object") from None
    if eos is None:
        return ()
    return tuple(int(i) for i in (eos if isinstance(eos, list) else [eos]))


def load_llama(path: str | Path) -> tuple[GPT, PretrainedTokenizer | None]:
    """A GPT and its tokenizer (or None) from a Hugging Face Llama, Qwen2 or Mistral directory (weights in
    model.safetensors, sharded safetensors or pytorch_model.bin; any float dtype, loaded as float32)."""
    path = Path(path)
    hf = read_config(path)
    config = config_from_hf(hf)
    model = GPT(config)
    try:
        state = state_from_hf(read_state_dict(path), config)
        model.load_state_dict(state, strict=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match config.json ({exc})") from None
    model.eval()
    return model, load_pretrained_tokenizer(path, _stop_ids(path, hf))


def save_llama(model: GPT, path: str | Path, tokenizer: PretrainedTokenizer | None = None) -> None:
    """Write config.json + model.safetensors (+ the tokenizer) that transformers' ``*ForCausalLM`` loads."""
    bos = None
    stops: tuple[int, ...] = ()
    if tokenizer is not None:
        stops = tokenizer.stop_ids
        bos_token = getattr(tokenizer, "special_tokens", {}).get("bos_token")
        bos = None if bos_token is None else tokenizer.tokenizer.token_to_id(bos_token)
    write_model_dir(path, config_to_hf(model.config, bos, stops), state_to_hf(model))
    if tokenizer is not None:
        tokenizer.save(path)
