"""The Transformer encoder-decoder (spec part 2; Vaswani et al. 2017, "Attention Is All You Need").

    memory = Encoder(Embed(src) )                      N x [self-attention, FFN]
    hidden = Decoder(Embed(tgt), memory)                N x [masked self-attention, cross-attention, FFN]
    logits = hidden W_E^T                               output projection tied to the target embedding

Embeddings are scaled by sqrt(d_model) and summed with sinusoidal (or learned) positions. Each sub-layer
has a residual connection and LayerNorm after it (post-norm, the paper's) or before it (pre-norm). The
layers are the shared :class:`attnkit.layers.TransformerLayer`; decoding goes through
:class:`TransformerSession` (a :class:`attnkit.decoding.DecoderSession`), whose per-layer KV caches make
each step O(t) and compute the encoder's keys/values once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit.attention.cache import KVCache, static_capacity
from attnkit.attention.masks import padding_mask
from attnkit.config_io import JsonConfig
from attnkit.kernels import compiled
from attnkit.layers import Embeddings, LayerCache, LayerStack, StackOutput, TransformerLayer
from attnkit.layers.blocks import StaticLayers
from attnkit.layers.embeddings import SINUSOID_LAYOUTS
from attnkit.layers.linear import use_fast_linears
from attnkit.layers.losses import LossSum, smoothed_cross_entropy
from attnkit.models.params import num_parameters

PRESETS = ("base", "big", "small", "tiny")
# The names of these sizes in config.json (attnkit's first format for it, kept so that every run reads).
LEGACY_NAMES = {"n_heads": "num_heads", "n_encoder_layers": "num_encoder_layers",
                "n_decoder_layers": "num_decoder_layers"}
# Fields written to config.json only when they differ from these defaults (the options pretrained families
# need): files written before they existed stay byte for byte the same, and older attnkit versions read them.
OMITTED_DEFAULTS = {"activation_dropout": None, "sinusoid": "interleaved", "position_start": 0,
                    "scale_embeddings": True, "output_bias": False}


@dataclass
class TransformerConfig(JsonConfig, family="Transformer", presets=PRESETS, legacy=LEGACY_NAMES):
    """Shape and options of a :class:`Transformer` (saved as ``config.json`` beside the weights).

    share_embeddings: one embedding table for source and target (needs one joint vocabulary);
    tie_output: the output projection is the target embedding matrix (the paper's weight sharing);
    final_norm: a LayerNorm after the last encoder and decoder layer (needed by pre-norm; default: on
    exactly when ``norm_first``); max_len: the largest position + 1 of source and target sequences.
    dropout: on embeddings and each sub-layer's output; attn_dropout (on attention weights) and
    activation_dropout (inside the FFN): ``None`` = ``dropout``.

    Options of pretrained families (Marian / OPUS-MT, M2M-100, NLLB): ``activation`` any of FeedForward's
    ("silu" is Marian's "swish"); ``sinusoid``: the sinusoidal table's layout ("interleaved", the paper's;
    "marian"; "fairseq") and ``position_start`` its first row (M2M-100 numbers positions from pad_id + 1);
    ``scale_embeddings``: token embeddings times sqrt(d_model); ``output_bias``: a bias on the output
    projection (Marian's ``final_logits_bias``); ``bos_id``: the decoder's start token (Marian starts with
    pad, M2M-100 with eos). Separate vocabularies: ``share_embeddings=False``; an untied output projection:
    ``tie_output=False``.
    JSON I/O and ``preset(name)`` come from :class:`~attnkit.config_io.JsonConfig`.
    """

    src_vocab_size: int = 37000
    tgt_vocab_size: int = 37000
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    dropout: float = 0.1
    attn_dropout: float | None = None
    activation_dropout: float | None = None
    activation: str = "relu"
    norm_first: bool = False
    final_norm: bool | None = None
    positions: str = "sinusoidal"
    max_len: int = 256
    share_embeddings: bool = True
    tie_output: bool = True
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    eps: float = 1e-5
    model_type: str = "transformer"
    sinusoid: str = "interleaved"
    position_start: int = 0
    scale_embeddings: bool = True
    output_bias: bool = False

    def __post_init__(self) -> None:
        if self.final_norm is None:
            self.final_norm = self.norm_first
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                f"share_embeddings needs one vocabulary, got src {self.src_vocab_size} != tgt {self.tgt_vocab_size}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.sinusoid not in SINUSOID_LAYOUTS:
            raise ValueError(f"sinusoid must be one of {SINUSOID_LAYOUTS}, got {self.sinusoid!r}")

    def to_dict(self) -> dict:
        """As JsonConfig's, without the fields of :data:`OMITTED_DEFAULTS` that have their default."""
        d = super().to_dict()
        for name, default in OMITTED_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

    # Presets: the paper's two models and smaller ones that train on a CPU.
    @classmethod
    def base(cls, **kw) -> TransformerConfig:
        return cls(**{**dict(d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6,
                             dropout=0.1), **kw})

    @classmethod
    def big(cls, **kw) -> TransformerConfig:
        return cls(**{**dict(d_model=1024, n_heads=16, d_ff=4096, n_encoder_layers=6, n_decoder_layers=6,
                             dropout=0.3), **kw})

    @classmethod
    def small(cls, **kw) -> TransformerConfig:
        """About 8M parameters with a 10k vocabulary: Multi30k in an hour on 2 CPU cores."""
        return cls(**{**dict(d_model=256, n_heads=4, d_ff=1024, n_encoder_layers=3, n_decoder_layers=3,
                             dropout=0.1), **kw})

    @classmethod
    def tiny(cls, **kw) -> TransformerConfig:
        """For tests and the demo: seconds to minutes on a CPU."""
        return cls(**{**dict(d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2,
                             dropout=0.0), **kw})


class Transformer(nn.Module):
    """Encoder-decoder Transformer. Token ids are [B, S] (source) and [B, T] (target, starting with BOS)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = self.config = config
        self.src_embed = self._embeddings(c.src_vocab_size)
        self.tgt_embed = self.src_embed if c.share_embeddings else self._embeddings(c.tgt_vocab_size)
        self.encoder = LayerStack(self._layer(False) for _ in range(c.n_encoder_layers))
        self.decoder = LayerStack(self._layer(True) for _ in range(c.n_decoder_layers))
        self.encoder_norm = nn.LayerNorm(c.d_model, eps=c.eps) if c.final_norm else None
        self.decoder_norm = nn.LayerNorm(c.d_model, eps=c.eps) if c.final_norm else None
        self.output = nn.Linear(c.d_model, c.tgt_vocab_size, bias=c.output_bias)
        if c.tie_output:
            self.output.weight = self.tgt_embed.tokens.weight
        # Same parameters; one-sentence greedy decoding reads the weights in the faster [in, out] layout.
        use_fast_linears(self)
        self._init_weights()

    def _embeddings(self, vocab: int) -> Embeddings:
        c = self.config
        return Embeddings(vocab, c.d_model, c.max_len, positions=c.positions, scale=c.scale_embeddings,
                          dropout=c.dropout, padding_idx=c.pad_id, sinusoid=c.sinusoid, position_start=c.position_start)

    def _layer(self, cross: bool) -> TransformerLayer:
        c = self.config
        return TransformerLayer(c.d_model, c.n_heads, c.d_ff, dropout=c.dropout, attn_dropout=c.attn_dropout,
                                activation_dropout=c.activation_dropout,
                                activation=c.activation, norm_first=c.norm_first, cross_attention=cross, eps=c.eps)

    def _init_weights(self) -> None:
        """Xavier-uniform matrices (as nn.Transformer); embeddings N(0, d^-1/2) so that the sqrt(d)-scaled
        tokens have unit variance (and tied output logits start small)."""
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                nn.init.xavier_uniform_(p)
        for emb in {id(self.src_embed): self.src_embed, id(self.tgt_embed): self.tgt_embed}.values():
            nn.init.normal_(emb.tokens.weight, std=self.config.d_model**-0.5)
            with torch.no_grad():
                emb.tokens.weight[self.config.pad_id].zero_()
            if emb.positions == "learned":
                nn.init.normal_(emb.position.weight, std=0.02)
        if self.output.bias is not None:
            nn.init.zeros_(self.output.bias)

    def source_mask(self, src: Tensor) -> Tensor:
        """src [B, S] -> padding mask [B, 1, 1, S] (True = real token)."""
        return padding_mask(src != self.config.pad_id)

    def encode(self, src: Tensor, src_mask: Tensor | None = None, *, need_weights: bool = False) -> StackOutput:
        """src [B, S] ids -> StackOutput(hidden = memory [B, S, E], encoder self-attention weights per layer
        [B, H, S, S] when need_weights). src_mask: [B, 1, 1, S] (default: from padding)."""
        src_mask = self.source_mask(src) if src_mask is None else src_mask
        out = self.encoder(self.src_embed(src), mask=src_mask, need_weights=need_weights)
        return out if self.encoder_norm is None else out._replace(hidden=self.encoder_norm(out.hidden))

    def decode(
        self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None, *, caches: list[LayerCache] | None = None,
        offset: int = 0, need_weights: bool = False,
    ) -> StackOutput:
        """tgt [B, T] ids at positions offset.. offset+T-1; memory [B, S, E]; memory_mask [B, 1, 1, S].
        Each target position sees only itself and earlier ones (causal) and every real source token.
        Returns StackOutput(hidden [B, T, E], per layer self-attention [B, H, T, T'] and cross-attention
        [B, H, T, S] weights when need_weights)."""
        x = self.tgt_embed(tgt, offset=offset)
        # One new query after the cached prefix may see every key: skip building an all-True mask.
        causal = not (caches is not None and tgt.shape[1] == 1)
        out = self.decoder(x, causal=causal, memory=memory, memory_mask=memory_mask, caches=caches,
                           need_weights=need_weights)
        return out if self.decoder_norm is None else out._replace(hidden=self.decoder_norm(out.hidden))

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """src [B, S], tgt [B, T] (teacher forcing input) -> logits [B, T, V_tgt]."""
        src_mask = self.source_mask(src)
        memory = self.encode(src, src_mask).hidden
        return self.output(self.decode(tgt, memory, src_mask).hidden)

    def loss_sum(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor, *, smoothing: float = 0.0) -> LossSum:
        """Training loss: label-smoothed cross-entropy summed over the targets tgt_out [B, T] that are not
        padding, with their count (the shared loop's convention). Equals ``smoothed_cross_entropy(forward(src,
        tgt_in), tgt_out, ignore_index=pad_id)``, but the output projection and the loss, the largest products
        of a step, are computed only at the real target positions, not at the padding."""
        src_mask = self.source_mask(src)
        hidden = self.decode(tgt_in, self.encode(src, src_mask).hidden, src_mask).hidden  # (B, T, E)
        keep = tgt_out != self.config.pad_id  # (B, T)
        return smoothed_cross_entropy(self.output(hidden[keep]), tgt_out[keep], smoothing=smoothing,
                                      ignore_index=None)  # (N, V) logits of the N real targets

    def start_decoding(self, src: Tensor, max_len: int | None = None, compile: bool = False) -> TransformerSession:
        """Encode ``src`` [B, S] once and return a DecoderSession for up to ``max_len`` target tokens;
        ``compile``: one-token steps after the first compiled over static caches
        (:class:`~attnkit.attention.cache.StaticKVCache`; finished rows stay in the batch)."""
        return TransformerSession(self, src, max_len or self.config.max_len, compile=compile)

    def num_parameters(self) -> int:
        return num_parameters(self)


class TransformerSession:
    """DecoderSession of a Transformer: the encoder output plus one LayerCache per decoder layer
    (self-attention cache of ``max_len`` positions, cross-attention cache filled once at the first step)."""

    def __init__(self, model: Transformer, src: Tensor, max_len: int, compile: bool = False) -> None:
        self.model, self.max_len = model, max_len
        self.compile = self.fixed_rows = compile
        self._static: StaticLayers | None = None
        self.memory_mask = model.source_mask(src)  # [B, 1, 1, S]
        self.memory = model.encode(src, self.memory_mask).hidden  # [B, S, E]
        s = src.shape[1]
        self.caches = [LayerCache(KVCache(max_len), KVCache(s)) for _ in model.decoder]
        self.offset = 0
        self.sources = torch.arange(src.shape[0], device=src.device)  # (B,) source sentence of each row

    def step(self, tokens: Tensor) -> Tensor:
        """tokens [B, t] -> logits [B, t, V] (appended to the caches)."""
        if self._static is not None:
            raise ValueError("a compiled session takes one token per step_last call after its first step")
        out = self.model.decode(tokens, self.memory, self.memory_mask, caches=self.caches, offset=self.offset)
        self.offset += tokens.shape[1]
        return self.model.output(out.hidden)

    def step_last(self, tokens: Tensor) -> Tensor:
        """tokens [B, t] -> logits [B, V] of the last position; compiled after the first step (``compile``)."""
        if not (self.compile and self.offset > 0 and tokens.shape[1] == 1):
            return self.step(tokens)[:, -1]
        if self.offset + 1 > self.max_len:
            raise ValueError(f"cannot decode past {self.max_len} tokens ({self.offset} done, 1 more)")
        if self._static is None:  # after the first step: move the caches into static ones
            capacity = static_capacity(self.max_len, self.model.config.max_len)
            self._static = StaticLayers(self.caches, self.offset, capacity)
            self.caches = []
        st = self._static
        st.advance(self.offset)
        logits = compiled(_static_step)(self.model, tokens, st.positions, st.key_mask, self.memory, self.memory_mask,
                                        st.caches)
        self.offset += 1
        return logits

    def reorder(self, index: Tensor) -> None:
        sources = self.sources.index_select(0, index)
        if self._static is not None:
            same = torch.equal(sources, self.sources)
            self._static.reorder(index, cross=not same)
            if not same:
                self.sources = sources
                self.memory = self.memory.index_select(0, index)
                self.memory_mask = self.memory_mask.index_select(0, index)
            return
        if torch.equal(sources, self.sources):
            # Beam search shuffles hypotheses among the rows of one sentence: the encoder output and the
            # cross-attention keys/values of every row stay what they are; only the target prefix moves.
            for cache in self.caches:
                cache.self_attn.reorder(index)
            return
        self.sources = sources
        self.memory = self.memory.index_select(0, index)
        self.memory_mask = self.memory_mask.index_select(0, index)
        for cache in self.caches:
            cache.reorder(index)


def _static_step(model: Transformer, tokens: Tensor, positions: Tensor, key_mask: Tensor, memory: Tensor,
                 memory_mask: Tensor, caches: list[LayerCache]) -> Tensor:
    """One decoder step over static caches (compiled by TransformerSession): tokens [B, 1] at ``positions``
    [B, 1], self-attention keys allowed by ``key_mask`` [B, 1, 1, C], the encoder's ``memory`` [B, S, E]
    (its keys and values already in the cross caches) and ``memory_mask`` [B, 1, 1, S] -> logits [B, V]."""
    x = model.tgt_embed(tokens, positions=positions)  # (B, 1, E)
    out = model.decoder(x, mask=key_mask, causal=False, memory=memory, memory_mask=memory_mask, caches=caches)
    hidden = out.hidden if model.decoder_norm is None else model.decoder_norm(out.hidden)
    return model.output(hidden[:, -1])  # (B, V)
