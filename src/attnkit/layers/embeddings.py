"""Input embeddings: tokens, positions (sinusoidal or learned) and segments (token types).

The Transformer uses sqrt(d_model)-scaled tokens + sinusoidal positions; GPT tokens + learned positions;
BERT tokens + learned positions + token types followed by LayerNorm. One module covers all three.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from attnkit.layers.dropout import Dropout

SINUSOID_LAYOUTS = ("interleaved", "marian", "fairseq")


def sinusoidal_table(max_len: int, d_model: int, layout: str = "interleaved", start: int = 0) -> Tensor:
    """Rows ``start .. start + max_len - 1`` of a sinusoidal position table. Returns [max_len, d_model].

    "interleaved" (the paper's): PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...).
    "marian": the same frequencies, sines in the first half of the columns, cosines in the second (Marian,
    computed as Hugging Face's MarianSinusoidalPositionalEmbedding does). "fairseq": sines | cosines of
    pos * 10000^(-i / (d/2 - 1)) (tensor2tensor's, fairseq's and M2M-100's, in float32 as they compute it).
    ``start``: the first row (fairseq-style models number positions from padding_idx + 1)."""
    if layout == "marian":
        return _marian_table(max_len, d_model, start)
    if layout == "fairseq":
        return _fairseq_table(max_len, d_model, start)
    if layout != "interleaved":
        raise ValueError(f"sinusoid layout must be one of {SINUSOID_LAYOUTS}, got {layout!r}")
    pos = torch.arange(start, start + max_len, dtype=torch.float64).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return table.float()


def _marian_table(max_len: int, d_model: int, start: int) -> Tensor:
    pos = np.arange(start, start + max_len, dtype=np.float64)[:, None]
    angle = pos / np.power(10000, 2 * (np.arange(d_model) // 2) / d_model)  # (T, E): column j uses 2*(j//2)
    half = (d_model + 1) // 2
    table = torch.empty(max_len, d_model)
    table[:, :half] = torch.from_numpy(np.sin(angle[:, 0::2])).float()
    table[:, half:] = torch.from_numpy(np.cos(angle[:, 1::2])).float()
    return table


def _fairseq_table(max_len: int, d_model: int, start: int) -> Tensor:
    half = d_model // 2
    freq = torch.exp(torch.arange(half, dtype=torch.int64).float() * -(math.log(10000) / (half - 1)))
    angle = torch.arange(start + max_len, dtype=torch.int64).float().unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)  # (start + T, 2 * half)
    if d_model % 2:
        table = torch.cat([table, torch.zeros(start + max_len, 1)], dim=1)
    return table[start:].contiguous()


class Embeddings(nn.Module):
    """token (+ position) (+ token type), optional LayerNorm, dropout.

    Args:
        vocab_size, d_model: V and E. max_len: the largest position + 1.
        positions: "sinusoidal", "learned" or "none". scale: multiply token embeddings by sqrt(E).
        type_vocab_size: number of token types (segments), 0 for none. layer_norm: LayerNorm after
        the sum (BERT). padding_idx: embedding row kept at zero for padding (or None).
        sinusoid, position_start: the sinusoidal table's layout and first row (see :func:`sinusoidal_table`).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_len: int,
        *,
        positions: str = "sinusoidal",
        scale: bool = False,
        type_vocab_size: int = 0,
        layer_norm: bool = False,
        eps: float = 1e-12,
        dropout: float = 0.0,
        padding_idx: int | None = None,
        sinusoid: str = "interleaved",
        position_start: int = 0,
    ) -> None:
        super().__init__()
        if positions not in ("sinusoidal", "learned", "none"):
            raise ValueError(f"positions must be 'sinusoidal', 'learned' or 'none', got {positions!r}")
        self.d_model, self.max_len, self.positions = d_model, max_len, positions
        self.scale = math.sqrt(d_model) if scale else 1.0
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        if positions == "learned":
            self.position = nn.Embedding(max_len, d_model)
        elif positions == "sinusoidal":
            self.register_buffer("position_table", sinusoidal_table(max_len, d_model, sinusoid, position_start),
                                 persistent=False)
        self.token_types = nn.Embedding(type_vocab_size, d_model) if type_vocab_size else None
        self.norm = nn.LayerNorm(d_model, eps=eps) if layer_norm else None
        self.dropout = Dropout(dropout)

    def forward(
        self, ids: Tensor, *, positions: Tensor | None = None, offset: int = 0,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """ids [B, T] -> [B, T, E]. positions [B, T] (or [T]) overrides the default offset + arange(T)
        (left-padded batches shift them); token_type_ids [B, T] default to type 0."""
        t = ids.shape[1]
        x = self.tokens(ids) * self.scale
        if self.positions != "none":
            if positions is None:
                # Checked in Python: no tensor op or graph break (torch.compile) on the common path.
                if offset + t > self.max_len:
                    raise ValueError(
                        f"position {offset + t - 1} is beyond the model's maximum length {self.max_len}"
                    )
                if self.positions == "learned":
                    positions = torch.arange(offset, offset + t, device=ids.device)
            # (A compiled decoding step's session checks the length: reading the maximum would break its graph.)
            elif positions.numel() and not torch.compiler.is_compiling() and int(positions.max()) >= self.max_len:
                raise ValueError(
                    f"position {int(positions.max())} is beyond the model's maximum length {self.max_len}"
                )
            if self.positions == "learned":
                x = x + self.position(positions)
            elif positions is None:
                x = x + self.position_table[offset : offset + t]  # a slice: no gather
            else:
                x = x + self.position_table[positions]
        if self.token_types is not None:
            types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
            x = x + self.token_types(types)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)
