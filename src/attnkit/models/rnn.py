"""RNN encoder-decoder with attention (spec part 1, items 1, 3 and 4): the model attention was invented for.

The encoder is a (bidirectional) GRU or LSTM over the source; the decoder is a GRU or LSTM whose state
at each step is the query of an attention over the encoder states (Luong's "global attention"):

    h_t = RNN(y_{t-1}, h_{t-1});  c_t = sum_i alpha_ti e_i,  alpha_t = softmax_i(s(e_i, h_t))
    o_t = tanh(W_c [h_t; c_t]);   p(y_t) = softmax(W_o o_t)

``s`` is any scoring function of ``attnkit.attention.scoring`` (additive = Bahdanau's score, dot and
bilinear = Luong's "dot" and "general", scaled dot), or hard attention (one encoder state, sampled while
training and trained with REINFORCE, argmax at inference). The query is the current state (no input
feeding), so teacher-forced training runs the decoder RNN over the whole target at once and attends with
all T queries in one call, and step decoding is the same computation one token at a time.

Interface shared with the Transformer (``attnkit.models.transformer``): ``encode``, ``forward`` (logits),
``start_decoding`` (a :class:`attnkit.decoding.DecoderSession` for ``generate`` and beam search).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit.attention import HardAttention, SoftAttention, reinforce_loss
from attnkit.attention.scoring import make_score
from attnkit.config_io import JsonConfig
from attnkit.layers.dropout import Dropout
from attnkit.layers.losses import LossSum, smoothed_cross_entropy
from attnkit.models.params import num_parameters

CELLS = ("gru", "lstm")
SCORES = ("additive", "dot", "scaled_dot", "bilinear", "hard")


@dataclass
class RNNSeq2SeqConfig(JsonConfig, family="RNN", presets=("tiny", "small", "base"), legacy={"n_layers": "num_layers"}):
    """cell: "gru" | "lstm"; score: "additive" | "dot" | "scaled_dot" | "bilinear" | "hard" (hard
    attention with the ``hard_score`` scoring function); d_emb / d_hidden: embedding and state widths
    (the encoder's outputs, both directions together, are d_hidden wide); n_layers of each RNN. JSON I/O
    and ``preset(name)`` come from :class:`~attnkit.config_io.JsonConfig`."""

    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    d_emb: int = 256
    d_hidden: int = 256
    n_layers: int = 1
    cell: str = "gru"
    score: str = "additive"
    hard_score: str = "bilinear"
    bidirectional: bool = True
    dropout: float = 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    reinforce_weight: float = 1.0
    model_type: str = "rnn"

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.hard_score not in SCORES[:-1]:
            raise ValueError(f"hard_score must be one of {SCORES[:-1]}, got {self.hard_score!r}")
        if self.bidirectional and self.d_hidden % 2:
            raise ValueError(f"a bidirectional encoder needs an even d_hidden, got {self.d_hidden}")

    @classmethod
    def tiny(cls, **kw) -> RNNSeq2SeqConfig:
        """For tests and the demo: seconds on a CPU."""
        return cls(**{**dict(d_emb=32, d_hidden=32, dropout=0.0), **kw})

    @classmethod
    def small(cls, **kw) -> RNNSeq2SeqConfig:
        return cls(**{**dict(d_emb=256, d_hidden=256, n_layers=1, dropout=0.1), **kw})

    @classmethod
    def base(cls, **kw) -> RNNSeq2SeqConfig:
        """Close to Luong et al.'s 1000-unit models, scaled down: 2 layers of 512."""
        return cls(**{**dict(d_emb=512, d_hidden=512, n_layers=2, dropout=0.2), **kw})


class Memory(NamedTuple):
    """The encoder's output: states [B, S, d_hidden], mask [B, 1, S] (True = real token), and the
    decoder's initial RNN state (h [L, B, d_hidden], or (h, c) for an LSTM)."""

    states: Tensor
    mask: Tensor
    init_state: Tensor | tuple[Tensor, Tensor]


class RNNOutput(NamedTuple):
    logits: Tensor  # [B, T, V]
    weights: Tensor | None  # [B, T, S] attention over the source, when need_weights (or hard attention)
    log_prob: Tensor | None  # [B, T] log-probability of each hard choice (hard attention only)


State = Tensor | tuple[Tensor, Tensor]


def _select_state(state: State, index: Tensor) -> State:
    if isinstance(state, tuple):
        return state[0].index_select(1, index), state[1].index_select(1, index)
    return state.index_select(1, index)


class RNNSeq2Seq(nn.Module):
    """GRU/LSTM encoder-decoder whose decoder attends over the encoder states (see the module doc)."""

    def __init__(self, config: RNNSeq2SeqConfig) -> None:
        super().__init__()
        self.config = self.cfg = cfg = config
        rnn = nn.GRU if cfg.cell == "gru" else nn.LSTM
        drop = cfg.dropout if cfg.n_layers > 1 else 0.0
        enc_hidden = cfg.d_hidden // 2 if cfg.bidirectional else cfg.d_hidden
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.d_emb, padding_idx=cfg.pad_id)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_emb, padding_idx=cfg.pad_id)
        self.encoder = rnn(cfg.d_emb, enc_hidden, cfg.n_layers, batch_first=True, dropout=drop,
                           bidirectional=cfg.bidirectional)
        self.bridge = nn.Linear(cfg.d_hidden, cfg.d_hidden)
        self.decoder = rnn(cfg.d_emb, cfg.d_hidden, cfg.n_layers, batch_first=True, dropout=drop)
        if cfg.score == "hard":
            self.attention: nn.Module = HardAttention(make_score(cfg.hard_score, cfg.d_hidden, cfg.d_hidden),
                                                      mode="sample")
        else:
            self.attention = SoftAttention(make_score(cfg.score, cfg.d_hidden, cfg.d_hidden))
        self.combine = nn.Linear(2 * cfg.d_hidden, cfg.d_hidden)
        self.out = nn.Linear(cfg.d_hidden, cfg.tgt_vocab_size)
        self.dropout = Dropout(cfg.dropout)

    # -- encoder -------------------------------------------------------------------------------------
    def encode(self, src: Tensor) -> Memory:
        """src [B, S] token ids (``pad_id`` = padding, anywhere after the tokens) -> Memory."""
        if src.dim() != 2 or src.shape[1] == 0:
            raise ValueError(f"src must be [B, S] token ids with S >= 1, got {tuple(src.shape)}")
        keep = src != self.cfg.pad_id  # (B, S)
        lengths = keep.sum(1).clamp(min=1).cpu()
        x = self.dropout(self.src_embed(src))  # (B, S, d_emb)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.encoder(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=src.shape[1])  # (B, S, d_h)
        # Mean of the real states starts the decoder (works for both directions and both cells).
        mean = (states * keep.unsqueeze(-1)).sum(1) / lengths.to(states).unsqueeze(-1)  # (B, d_h)
        h0 = torch.tanh(self.bridge(mean)).unsqueeze(0).repeat(self.cfg.n_layers, 1, 1)  # (L, B, d_h)
        init: State = (h0, torch.zeros_like(h0)) if self.cfg.cell == "lstm" else h0
        return Memory(states, keep.unsqueeze(1), init)

    # -- decoder -------------------------------------------------------------------------------------
    def decode(self, tgt_in: Tensor, memory: Memory, state: State | None = None,
               need_weights: bool = False) -> tuple[RNNOutput, State]:
        """tgt_in [B, T] (the shifted target, or one step) from RNN ``state`` (default: the initial one).
        Returns RNNOutput(logits [B, T, V], weights [B, T, S] or None, log_prob [B, T] or None) and the
        new state."""
        state = memory.init_state if state is None else state
        y = self.dropout(self.tgt_embed(tgt_in))  # (B, T, d_emb)
        h, state = self.decoder(y, state)  # (B, T, d_h)
        if isinstance(self.attention, HardAttention):
            # Sample while training (REINFORCE explores); the most probable state at inference.
            self.attention.mode = "sample" if self.training else "argmax"
            att = self.attention(h, memory.states, mask=memory.mask)
            context, weights, log_prob = att.output, att.weights, att.log_prob
        else:
            context, weights = self.attention(h, memory.states, mask=memory.mask)
            log_prob = None
        o = torch.tanh(self.combine(torch.cat([h, context], dim=-1)))  # (B, T, d_h)
        logits = self.out(self.dropout(o))  # (B, T, V)
        keep_weights = need_weights or log_prob is not None
        return RNNOutput(logits, weights if keep_weights else None, log_prob), state

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """src [B, S], tgt_in [B, T] (BOS + target without its last token) -> logits [B, T, V]."""
        return self.run(src, tgt_in).logits

    def run(self, src: Tensor, tgt_in: Tensor, *, need_weights: bool = False) -> RNNOutput:
        """Like ``forward`` but returns the attention weights [B, T, S] and hard choices' log-probs too."""
        out, _ = self.decode(tgt_in, self.encode(src), need_weights=need_weights)
        return out

    def loss_sum(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor, *, smoothing: float = 0.0) -> LossSum:
        """The training loss as LossSum(total, count) (the shared loop's convention): summed token
        cross-entropy (pad_id ignored); with hard attention plus, per target token, the REINFORCE loss of
        its attention choice with reward = -(its token loss) and baseline = the batch's mean reward."""
        out = self.run(src, tgt_in)
        ce = smoothed_cross_entropy(out.logits, tgt_out, smoothing=smoothing, ignore_index=self.cfg.pad_id)
        if out.log_prob is None:
            return ce
        keep = tgt_out != self.cfg.pad_id
        logp = torch.log_softmax(out.logits.detach().float(), -1)
        reward = logp.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)[keep]  # -(token NLL), (N,)
        rl = reinforce_loss(out.log_prob[keep], reward, reward.mean())  # a mean over the N tokens
        return LossSum(ce.total + self.cfg.reinforce_weight * rl * ce.count, ce.count)

    def loss(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor, *, smoothing: float = 0.0) -> Tensor:
        """``loss_sum`` as a mean per target token."""
        total, count = self.loss_sum(src, tgt_in, tgt_out, smoothing=smoothing)
        return total / count.clamp(min=1)

    def start_decoding(self, src: Tensor, max_len: int | None = None) -> RNNSession:
        """Encode ``src`` [B, S] once; the returned session decodes step by step (a DecoderSession).
        ``max_len`` is accepted for the Transformer's signature; an RNN state has no length limit."""
        return RNNSession(self, self.encode(src))

    def num_parameters(self) -> int:
        return num_parameters(self)


class RNNSession:
    """DecoderSession of an RNNSeq2Seq: the encoder output and the decoder's RNN state."""

    def __init__(self, model: RNNSeq2Seq, memory: Memory) -> None:
        self.model, self.memory, self.state = model, memory, memory.init_state

    def step(self, tokens: Tensor) -> Tensor:
        """tokens [B, t] -> logits [B, t, V]; the RNN state moves on by t steps."""
        out, self.state = self.model.decode(tokens, self.memory, self.state)
        return out.logits

    def step_with_weights(self, tokens: Tensor) -> RNNOutput:
        """Like ``step`` but also returns the attention weights [B, t, S]."""
        out, self.state = self.model.decode(tokens, self.memory, self.state, need_weights=True)
        return out

    def reorder(self, index: Tensor) -> None:
        m = self.memory
        self.memory = Memory(m.states.index_select(0, index), m.mask.index_select(0, index),
                             _select_state(m.init_state, index))
        self.state = _select_state(self.state, index)
