"""GPT (spec part 2, item 5): a unidirectional language model built from the Transformer decoder, and its
descendants of the Llama lineage (Llama, Qwen2, Mistral) as the same model with other arguments.

Each token sees only its left context. The model is the decoder stack without encoder-decoder attention:
token + learned position embeddings, pre-norm causal ``TransformerLayer`` blocks (GELU MLP), a final
LayerNorm and an output projection tied to the token embeddings (GPT-2's layout). Attention, feed-forward
and normalisation are attnkit's shared blocks; nothing here re-implements them.

The Llama lineage changes only arguments of those blocks (:class:`GPTConfig` fields, all defaulting to
GPT-2's choice): ``norm="rmsnorm"``, ``activation="swiglu"``, ``positions="rope"`` (rotary positions in
every attention instead of learned position embeddings; ``rope_theta``, ``rope_scaling``,
``rope_interleaved``), ``n_kv_heads`` (grouped-query attention), ``window`` (sliding-window attention,
Mistral), ``qkv_bias`` (Qwen2), ``qk_norm`` (Qwen3), ``bias=False`` and usually untied embeddings.

Decoding goes through :meth:`GPT.start_decoding`, a :class:`~attnkit.decoding.DecoderSession` with one
preallocated KV cache per layer (only the KV heads; only the last window positions when there is a
window), driven by :func:`attnkit.decoding.generate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit.attention.cache import KVCache, static_capacity
from attnkit.attention.masks import padding_mask
from attnkit.attention.rope import RopeScaling, RotaryEmbedding
from attnkit.config_io import JsonConfig
from attnkit.kernels import compiled
from attnkit.layers.blocks import LayerCache, LayerStack, StackOutput, StaticLayers, TransformerLayer
from attnkit.layers.embeddings import Embeddings
from attnkit.layers.linear import use_fast_linears
from attnkit.layers.norms import NORMS, make_norm
from attnkit.models.params import num_parameters

CONFIG_FILE = "gpt_config.json"
ACTIVATIONS = ("gelu_tanh", "gelu", "swiglu")  # the MLP activations of GPTConfig (FeedForward's names)


PRESETS = {"gpt2": "gpt2", "shakespeare-char": "shakespeare_char", "tiny": "tiny",  # name -> classmethod
           "llama-tiny": "llama_tiny"}


# The names of the sizes in gpt_config.json (attnkit's first format for it, kept so that every run reads).
LEGACY_NAMES = {"max_len": "block_size", "n_layers": "n_layer", "n_heads": "n_head", "d_model": "n_embd",
                "eps": "layer_norm_eps"}
# Fields written to the JSON only when they differ from these defaults: files written before they existed
# (GPT-2 style, always) stay byte for byte the same, and older attnkit versions still read them.
OMITTED_DEFAULTS = {"activation": "gelu_tanh", "norm": "layernorm", "positions": "learned", "n_kv_heads": None,
                    "window": None, "qkv_bias": None, "qk_norm": False, "rope_theta": 10000.0, "rope_scaling": None,
                    "rope_interleaved": False}


@dataclass
class GPTConfig(JsonConfig, family="GPT", presets=PRESETS, strict=True, legacy=LEGACY_NAMES):
    """Shapes and options of a GPT. ``max_len`` is the context length (number of learned positions; with
    RoPE, the longest sequence the model accepts); ``d_ff`` defaults to 4 * d_model; ``tie_embeddings``
    shares the token embedding with the output head; ``activation``: the MLP's GELU, "gelu_tanh" (GPT-2's
    "gelu_new") or "gelu" (exact, nanoGPT's nn.GELU), or "swiglu" (a gated MLP: gate, up, down).

    The Llama lineage's options: ``norm`` "layernorm" | "rmsnorm"; ``positions`` "learned" | "rope";
    ``n_kv_heads`` (default n_heads; fewer = grouped-query attention); ``window`` (sliding-window
    attention over the last ``window`` tokens); ``qkv_bias`` (biases on q/k/v; default ``bias``);
    ``qk_norm`` (RMSNorm of each head's queries and keys); ``rope_theta``, ``rope_scaling`` (a
    :class:`~attnkit.attention.rope.RopeScaling` as a dict: {"kind": "linear" | "llama3", "factor": ...}),
    ``rope_interleaved`` (GPT-J's pair layout). ``bias`` covers the other linears and LayerNorms.
    JSON I/O and ``preset(name)`` come from :class:`~attnkit.config_io.JsonConfig`."""

    vocab_size: int = 50257
    max_len: int = 1024
    n_layers: int = 12
    n_heads: int = 12
    d_model: int = 768
    d_ff: int | None = None
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    eps: float = 1e-5
    activation: str = "gelu_tanh"
    norm: str = "layernorm"
    positions: str = "learned"
    n_kv_heads: int | None = None
    window: int | None = None
    qkv_bias: bool | None = None
    qk_norm: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    rope_interleaved: bool = False

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.max_len, self.n_layers, self.n_heads, self.d_model) <= 0:
            raise ValueError(f"GPTConfig sizes must be positive: {self}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.positions not in ("learned", "rope"):
            raise ValueError(f"positions must be 'learned' or 'rope', got {self.positions!r}")
        if self.n_kv_heads is not None and (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads):
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.positions == "rope":
            if self.head_dim % 2:
                raise ValueError(f"RoPE needs an even head width, got {self.head_dim}")
            self.scaling()  # a bad rope_scaling fails here, not when the model is built

    def to_dict(self) -> dict:
        """As JsonConfig's, but without the fields of :data:`OMITTED_DEFAULTS` that have their default:
        JSON written before those fields existed is unchanged, and older attnkit versions still read it."""
        d = super().to_dict()
        for name, default in OMITTED_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def scaling(self) -> RopeScaling | None:
        """``rope_scaling`` as a RopeScaling (None without one); ValueError when malformed."""
        if self.rope_scaling is None:
            return None
        try:
            return RopeScaling(**self.rope_scaling)
        except TypeError as exc:
            raise ValueError(f"bad rope_scaling {self.rope_scaling} ({exc})") from None

    @property
    def ffn_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    # ------------------------------------------------------------------------------------- presets
    @classmethod
    def gpt2(cls, **overrides) -> GPTConfig:
        """GPT-2 small (124M parameters): 12 layers, 12 heads, 768 wide, 1024 positions, 50257 tokens."""
        return cls(**overrides)

    @classmethod
    def shakespeare_char(cls, **overrides) -> GPTConfig:
        """nanoGPT's CPU configuration for characters: 4 layers, 4 heads, 128 wide, context 64, no biases
        and exact GELU (nanoGPT's ``nn.GELU()``, also one fused kernel cheaper than GELU-tanh on CPU)."""
        base = dict(vocab_size=65, max_len=64, n_layers=4, n_heads=4, d_model=128, dropout=0.0, bias=False,
                    activation="gelu")
        return cls(**{**base, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> GPTConfig:
        """A model for tests and smoke runs: 2 layers, 2 heads, 32 wide, context 32."""
        base = dict(vocab_size=256, max_len=32, n_layers=2, n_heads=2, d_model=32)
        return cls(**{**base, **overrides})

    @classmethod
    def llama_tiny(cls, **overrides) -> GPTConfig:
        """A Llama-style model of the shakespeare-char preset's size and parameter count: 4 layers, 4
        heads sharing 2 KV heads, 128 wide, context 64; RMSNorm, SwiGLU (d_ff 384: the three matrices
        hold as many weights as GELU's two of 4 * 128 with full-head attention), RoPE, no biases."""
        base = dict(vocab_size=65, max_len=64, n_layers=4, n_heads=4, n_kv_heads=2, d_model=128, d_ff=384,
                    dropout=0.0, bias=False, activation="swiglu", norm="rmsnorm", positions="rope")
        return cls(**{**base, **overrides})


class GPT(nn.Module):
    """Decoder-only causal language model. ``forward(idx [B, T], mask [B, T] | None) -> logits [B, T, V]``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        c = self.config = config
        rope = c.positions == "rope"
        self.embed = Embeddings(c.vocab_size, c.d_model, c.max_len, positions="none" if rope else "learned",
                                dropout=c.dropout)
        self.layers = LayerStack(
            TransformerLayer(
                c.d_model, c.n_heads, c.ffn_dim, dropout=c.dropout, activation=c.activation, norm_first=True,
                eps=c.eps, bias=c.bias, norm=c.norm, num_kv_heads=c.n_kv_heads, qkv_bias=c.qkv_bias,
                rope=RotaryEmbedding(c.head_dim, c.rope_theta, c.scaling(), c.rope_interleaved) if rope else None,
                window=c.window, qk_norm=c.qk_norm,
            )
            for _ in range(c.n_layers)
        )
        self.norm = make_norm(c.norm, c.d_model, c.eps, c.bias)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.tokens.weight
        # Same parameters; one-token decoding steps read the weights in the faster [in, out] layout.
        use_fast_linears(self)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layers)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for layer in self.layers:
            for proj in (layer.self_attn.out_proj, layer.ffn.fc2):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layers))

    def num_parameters(self) -> int:
        """Parameters counted once (a tied head is not counted twice)."""
        return num_parameters(self)

    def forward(self, idx: Tensor, mask: Tensor | None = None) -> Tensor:
        """idx [B, T] token ids; mask [B, T] (bool or 0/1, True = real token) or None -> logits [B, T, V].

        With a mask, padding keys are never attended to and each row's real tokens get positions
        0, 1, 2, ... (``cumsum(mask) - 1``), so a left- or right-padded row gets the logits it would get
        alone at its real positions (values at padding positions are meaningless)."""
        return self.lm_head(self.decode(idx, mask).hidden)  # (B, T, V)

    def decode(self, idx: Tensor, mask: Tensor | None = None, *, need_weights: bool = False) -> StackOutput:
        """The decoder stack without the output head: idx [B, T], mask as ``forward`` -> StackOutput(hidden
        [B, T, E] after the final LayerNorm, per-layer masked self-attention weights [B, H, T, T] when
        need_weights)."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be [B, T], got {tuple(idx.shape)}")
        t = idx.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} exceeds the context length {self.config.max_len}")
        positions, attn_mask = None, None
        if mask is not None:
            if mask.shape != idx.shape:
                raise ValueError(f"mask must have idx's shape {tuple(idx.shape)}, got {tuple(mask.shape)}")
            mask = mask.bool()
            positions = (mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
            attn_mask = padding_mask(mask)  # (B, 1, 1, T)
        x = self.embed(idx, positions=positions)  # (B, T, E)
        out = self.layers(x, mask=attn_mask, causal=True, need_weights=need_weights, positions=positions)
        return out._replace(hidden=self.norm(out.hidden))

    def start_decoding(self, prompt_mask: Tensor | None = None, max_len: int | None = None,
                       compile: bool = False) -> GPTSession:
        """A DecoderSession for :func:`attnkit.decoding.generate`. ``prompt_mask`` [B, T0] marks the real
        tokens of a padded prompt batch (the first ``step``); ``max_len`` (default: the context length)
        bounds prompt + generated tokens; ``compile``: one-token steps compiled over a static cache
        (:class:`~attnkit.attention.cache.StaticKVCache`; not with a sliding window, which then runs uncompiled)."""
        return GPTSession(self, prompt_mask, max_len or self.config.max_len, compile=compile)


class GPTSession:
    """Incremental decoding of a GPT: per-layer preallocated KV caches, positions and a key mask (over
    the absolute positions; the slice of the keys the caches hold is passed to the layers).

    With ``prompt_mask`` (left padding), each row's real tokens get positions 0, 1, ... and padding keys
    are masked out, so every row generates exactly what it would generate alone.

    ``compile``: after the prompt, each one-token ``step_last`` runs :func:`_static_step` compiled, over
    :class:`~attnkit.layers.blocks.StaticLayers` (the same logits up to float rounding; finished rows stay
    in the batch)."""

    def __init__(self, model: GPT, prompt_mask: Tensor | None, max_len: int, compile: bool = False) -> None:
        if max_len > model.config.max_len:
            raise ValueError(f"max_len {max_len} exceeds the context length {model.config.max_len}")
        self.model, self.max_len, self.length = model, max_len, 0
        self.compile = self.fixed_rows = compile and model.config.window is None
        self._static: StaticLayers | None = None
        self.caches = [LayerCache(self_attn=KVCache(max_len, window=model.config.window)) for _ in model.layers]
        self.prompt_mask = None if prompt_mask is None or bool(prompt_mask.all()) else prompt_mask.bool()
        self.key_mask: Tensor | None = None  # (B, max_len), True = real token; only with padding
        self.next_pos: Tensor | None = None  # (B,) position of each row's next token; only with padding

    def _positions(self, tokens: Tensor) -> Tensor | None:
        """Positions [B, t] of this step's tokens (None: the default offset + arange, no padding)."""
        b, t = tokens.shape
        if self.length == 0 and self.prompt_mask is not None:
            if self.prompt_mask.shape != tokens.shape:
                raise ValueError(
                    f"prompt_mask {tuple(self.prompt_mask.shape)} does not match the prompt {tuple(tokens.shape)}"
                )
            self.key_mask = torch.ones(b, self.max_len, dtype=torch.bool, device=tokens.device)
            self.key_mask[:, :t] = self.prompt_mask
            counts = self.prompt_mask.long().cumsum(1)
            self.next_pos = counts[:, -1].clone()
            return (counts - 1).clamp(min=0)
        if self.next_pos is None:
            return None
        positions = self.next_pos[:, None] + torch.arange(t, device=tokens.device)  # (B, t)
        self.next_pos += t
        return positions

    def step(self, tokens: Tensor) -> Tensor:
        """tokens [B, t] -> logits [B, t, V]; appends them to the caches."""
        return self.model.lm_head(self._hidden(tokens))  # (B, t, V)

    def step_last(self, tokens: Tensor) -> Tensor:
        """As ``step`` but only the last position's logits [B, V]: a prompt of T0 tokens costs one output
        projection instead of T0 (``generate`` uses this when a session has it)."""
        if self.compile and self.length > 0 and tokens.shape[1] == 1:
            return self._compiled_step(tokens)
        return self.model.lm_head(self._hidden(tokens)[:, -1])  # (B, V)

    def _compiled_step(self, tokens: Tensor) -> Tensor:
        """One token per row [B, 1] -> logits [B, V] through the compiled :func:`_static_step`."""
        if self.length + 1 > self.max_len:
            raise ValueError(f"cannot decode past {self.max_len} tokens ({self.length} done, 1 more)")
        if self._static is None:  # the uncompiled caches hold the prompt: move them into static ones
            real = None if self.key_mask is None else self.key_mask[:, : self.length]
            capacity = static_capacity(self.max_len, self.model.config.max_len)
            self._static = StaticLayers(self.caches, self.length, capacity, real)
            self.caches = []
        st = self._static
        st.advance(self.length, self._positions(tokens))  # positions (B, 1), or None: every row at self.length
        logits = compiled(_static_step)(self.model, tokens, st.positions, st.key_mask, st.caches)
        self.length += 1
        return logits

    def _hidden(self, tokens: Tensor) -> Tensor:
        """tokens [B, t] -> final-LayerNorm hidden states [B, t, E]; appends them to the caches."""
        t = tokens.shape[1]
        if self.length + t > self.max_len:
            raise ValueError(f"cannot decode past {self.max_len} tokens ({self.length} done, {t} more)")
        if self._static is not None:
            raise ValueError("a compiled session takes one token per step_last call after its prompt")
        model = self.model
        positions = self._positions(tokens)
        x = model.embed(tokens, positions=positions, offset=self.length)  # (B, t, E)
        end = self.length + t
        start = self.caches[0].self_attn.next_start(t)  # the first key the caches will hold (a window drops some)
        mask = None if self.key_mask is None else self.key_mask[:, None, None, start:end]  # (B, 1, 1, S)
        x = model.layers(x, mask=mask, causal=True, caches=self.caches, positions=positions).hidden
        self.length = end
        return model.norm(x)

    def reorder(self, index: Tensor) -> None:
        if self._static is not None:
            self._static.reorder(index)
        for cache in self.caches:
            cache.reorder(index)
        if self.key_mask is not None and self.next_pos is not None:
            self.key_mask = self.key_mask.index_select(0, index)
            self.next_pos = self.next_pos.index_select(0, index)


def _static_step(model: GPT, tokens: Tensor, positions: Tensor, key_mask: Tensor, caches: list[LayerCache]) -> Tensor:
    """One decoding step over static caches (compiled by GPTSession): tokens [B, 1] at ``positions``
    [B, 1], keys allowed by ``key_mask`` [B, 1, 1, C] -> logits [B, V]."""
    x = model.embed(tokens, positions=positions)  # (B, 1, E)
    x = model.layers(x, mask=key_mask, causal=False, caches=caches, positions=positions).hidden
    return model.lm_head(model.norm(x)[:, -1])  # (B, V)
