"""BERT (spec part 2, item 5): a bidirectional Transformer encoder trained with a masked-LM objective.

BERT is the Transformer's encoder alone: token + learned position + token-type embeddings followed by
LayerNorm, then post-norm encoder layers with GELU, all attending over every real token (a padding mask,
no causal mask). It is built from the same :class:`~attnkit.layers.Embeddings` and
:class:`~attnkit.layers.TransformerLayer` as the Transformer and GPT; only the arguments differ.

Heads: masked-LM (transform + decoder tied to the token embeddings), sequence classification (on the
pooled [CLS] output) and token classification. Hugging Face conversion lives in
:mod:`attnkit.models.hf.bert`, which imports this module (never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.masks import padding_mask
from attnkit.config_io import JsonConfig
from attnkit.kernels import linear
from attnkit.layers import Embeddings, LayerStack, StackOutput, TransformerLayer
from attnkit.layers.dropout import Dropout
from attnkit.layers.linear import use_fast_linears

CONFIG_FILE = "bert_config.json"


PRESETS = ("base", "large", "minilm", "small", "mini", "tiny")


@dataclass
class BERTConfig(JsonConfig, family="BERT", presets=PRESETS, file_name=CONFIG_FILE, strict=True,
                 legacy={"max_len": "max_positions"}):
    """Shapes and regularisation of a BERT encoder, saved as ``CONFIG_FILE`` in a directory (``save`` and
    ``load`` take the directory; JSON I/O and ``preset(name)`` come from
    :class:`~attnkit.config_io.JsonConfig`)."""

    vocab_size: int = 30522  # V
    n_layers: int = 12
    n_heads: int = 12  # H
    d_model: int = 768  # E
    d_ff: int = 3072  # intermediate size
    max_len: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1  # hidden dropout (embeddings, sub-layer outputs, heads)
    attn_dropout: float = 0.1  # on attention weights
    eps: float = 1e-12  # LayerNorm epsilon
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        for name in ("vocab_size", "n_layers", "n_heads", "d_model", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    # Presets: the paper's two sizes, MiniLM-L6's shape, and small ones that train on 2 CPU cores.
    @classmethod
    def base(cls, **kw) -> BERTConfig:
        return cls(**kw)

    @classmethod
    def large(cls, **kw) -> BERTConfig:
        return cls(**{"n_layers": 24, "n_heads": 16, "d_model": 1024, "d_ff": 4096, **kw})

    @classmethod
    def minilm(cls, **kw) -> BERTConfig:
        return cls(**{"n_layers": 6, "n_heads": 12, "d_model": 384, "d_ff": 1536, **kw})

    @classmethod
    def small(cls, **kw) -> BERTConfig:
        return cls(**{"n_layers": 4, "n_heads": 4, "d_model": 256, "d_ff": 1024, "max_len": 128, **kw})

    @classmethod
    def mini(cls, **kw) -> BERTConfig:
        return cls(**{"n_layers": 2, "n_heads": 4, "d_model": 128, "d_ff": 512, "max_len": 128, **kw})

    @classmethod
    def tiny(cls, **kw) -> BERTConfig:
        return cls(**{"n_layers": 2, "n_heads": 2, "d_model": 32, "d_ff": 64, "max_len": 64, **kw})


class BERTOutput(NamedTuple):
    hidden: Tensor  # [B, T, E] last layer's hidden states
    pooled: Tensor | None  # [B, E] tanh(W h_[CLS] + b), or None without a pooler
    self_weights: list[Tensor] | None = None  # per layer [B, H, T, T] when need_weights


class LogitsOutput(NamedTuple):
    logits: Tensor  # masked LM [B, T, V]; sequence classification [B, C]; token classification [B, T, C]
    hidden: Tensor  # [B, T, E]


def _hf_to_mask(attention_mask: Tensor | None) -> Tensor | None:
    """Hugging Face's attention_mask (1 = real token) [B, T] -> attnkit's mask [B, 1, 1, T]."""
    return None if attention_mask is None else padding_mask(attention_mask)


class BERT(nn.Module):
    """The BERT encoder: embeddings, ``n_layers`` post-norm GELU encoder layers and an optional pooler."""

    def __init__(self, config: BERTConfig, *, pooler: bool = True) -> None:
        super().__init__()
        c = config
        self.config = c
        self.embeddings = Embeddings(
            c.vocab_size, c.d_model, c.max_len, positions="learned", type_vocab_size=c.type_vocab_size,
            layer_norm=True, eps=c.eps, dropout=c.dropout, padding_idx=c.pad_id,
        )
        self.layers = LayerStack(
            TransformerLayer(
                c.d_model, c.n_heads, c.d_ff, dropout=c.dropout, attn_dropout=c.attn_dropout,
                activation="gelu", norm_first=False, eps=c.eps,
            )
            for _ in range(c.n_layers)
        )
        self.pooler = nn.Linear(c.d_model, c.d_model) if pooler else None
        self.apply(_init_weights)
        use_fast_linears(self)  # same parameters; inference products take the CPU's fastest fp32 kernel

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
        *, need_weights: bool = False,
    ) -> BERTOutput:
        """input_ids [B, T]; attention_mask [B, T] (1/True = real token, 0 = padding; None = all real);
        token_type_ids [B, T] (segment A = 0, B = 1; None = all 0). Returns hidden [B, T, E], pooled [B, E]
        and, with need_weights, each layer's attention weights [B, H, T, T]."""
        out = self.encode(input_ids, attention_mask, token_type_ids, need_weights=need_weights)
        x = out.hidden  # (B, T, E)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, E)
        return BERTOutput(x, pooled, out.self_weights)

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
        *, need_weights: bool = False,
    ) -> StackOutput:
        """The encoder stack (``forward`` without the pooler): StackOutput(hidden [B, T, E], per-layer
        self-attention weights [B, H, T, T] when need_weights)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}"
            )
        x = self.embeddings(input_ids, token_type_ids=token_type_ids)  # (B, T, E)
        return self.layers(x, mask=_hf_to_mask(attention_mask), need_weights=need_weights)


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense, GELU, LayerNorm, then a decoder tied to the token embeddings."""

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor, embedding_weight: Tensor) -> Tensor:
        """hidden [..., E], the token embedding matrix [V, E] (the tied decoder) -> logits [..., V]."""
        h = self.norm(F.gelu(self.dense(hidden)))
        return linear(h, embedding_weight, self.bias)


class BERTForMaskedLM(nn.Module):
    """BERT with the masked-LM head (no pooler, as Hugging Face's BertForMaskedLM)."""

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BERT(config, pooler=False)
        self.mlm = MLMHead(config)
        self.mlm.apply(_init_weights)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
        *, select: Tensor | None = None,
    ) -> LogitsOutput:
        """input_ids [B, T] -> logits [B, T, V]; with ``select`` (bool [B, T], e.g. the masked positions)
        only those positions' logits, [N, V] in row-major order (the V-wide head is the costly part)."""
        hidden = self.bert.encode(input_ids, attention_mask, token_type_ids).hidden
        h = hidden if select is None else hidden[select]  # (B, T, E) or (N, E)
        return LogitsOutput(self.mlm(h, self.bert.embeddings.tokens.weight), hidden)


class _ClassifierHead(nn.Module):
    """The encoder, dropout and a linear layer to C classes: shared by sentence and token classification."""

    pooler: bool

    def __init__(self, config: BERTConfig, num_labels: int) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.config, self.num_labels = config, num_labels
        self.bert = BERT(config, pooler=self.pooler)
        self.dropout = Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, num_labels)
        self.classifier.apply(_init_weights)


class BERTForSequenceClassification(_ClassifierHead):
    """Sentence classification from the pooled [CLS] output: dropout, then a linear layer to C classes."""

    pooler = True

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> LogitsOutput:
        """input_ids [B, T] -> logits [B, C]."""
        out = self.bert(input_ids, attention_mask, token_type_ids)
        return LogitsOutput(self.classifier(self.dropout(out.pooled)), out.hidden)


class BERTForTokenClassification(_ClassifierHead):
    """A label per token (e.g. named entities): dropout, then a linear layer on every hidden state."""

    pooler = False

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> LogitsOutput:
        """input_ids [B, T] -> logits [B, T, C]."""
        hidden = self.bert.encode(input_ids, attention_mask, token_type_ids).hidden
        return LogitsOutput(self.classifier(self.dropout(hidden)), hidden)


def _init_weights(module: nn.Module) -> None:
    """BERT's initialisation: normal(0, 0.02) for linear and embedding weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def mean_pool(hidden: Tensor, attention_mask: Tensor | None, normalize: bool = True) -> Tensor:
    """Sentence embeddings (Sentence-BERT's mean pooling): the mean of the real tokens' hidden states,
    optionally L2-normalised. hidden [B, T, E], attention_mask [B, T] (1 = real) -> [B, E]."""
    if attention_mask is None:
        pooled = hidden.mean(1)
    else:
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled
