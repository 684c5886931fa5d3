"""Key/value cache for incremental decoding (as in gpt-fast: allocated once, written by position).

One ``KVCache`` serves one attention module of one layer. Self-attention appends the new step's keys and
values and attends over everything written so far, so a decoding step costs O(t) instead of recomputing
the O(t^2) prefix. Cross-attention stores the encoder's projected keys and values once ("static") and
reuses them at every step. ``reorder`` selects batch rows, which beam search needs.
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Preallocated keys and values [B, H, max_len, Dh], allocated on the first ``append``."""

    def __init__(self, max_len: int) -> None:
        if max_len <= 0:
            raise ValueError(f"KVCache max_len must be positive, got {max_len}")
        self.max_len = max_len
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H, t, Dh] at positions [length, length + t); return all keys and values so
        far, [B, H, length + t, Dh] (views of the preallocated buffers)."""
        t = k.shape[2]
        if self.k is None:
            b, h, _, dh = k.shape
            self.k = k.new_empty(b, h, self.max_len, dh)  # positions >= length are never read
            self.v = v.new_empty(b, h, self.max_len, v.shape[-1])
        assert self.v is not None
        if k.shape[0] != self.k.shape[0]:
            raise ValueError(f"KVCache holds batch {self.k.shape[0]}, got keys {tuple(k.shape)}")
        if self.length + t > self.max_len:
            raise ValueError(
                f"KVCache is full: {self.length} positions written, {t} more do not fit in max_len "
                f"{self.max_len}"
            )
        self.k[:, :, self.length : self.length + t] = k
        self.v[:, :, self.length : self.length + t] = v
        self.length += t
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def view(self) -> tuple[Tensor, Tensor]:
        """All keys and values written so far, [B, H, length, Dh]."""
        if self.k is None or self.v is None:
            raise ValueError("KVCache is empty")
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` [B'] (in that order; B' may differ from B, e.g. to expand beams or drop
        finished rows). Only the written positions are copied, and with B' == B only the rows that change
        (``index[i] != i``): beam search keeps most hypotheses in their rows, so a step copies few."""
        if self.k is None or self.v is None:
            return
        n = self.length
        if index.shape[0] == self.k.shape[0]:
            rows = torch.arange(index.shape[0], device=index.device)
            moved = rows[index != rows]  # (M,)
            if moved.numel():
                src = index[moved]
                self.k[moved, :, :n] = self.k[src, :, :n]  # the right side is gathered before the write
                self.v[moved, :, :n] = self.v[src, :, :n]
            return
        k = self.k.new_empty((index.shape[0], *self.k.shape[1:]))
        v = self.v.new_empty((index.shape[0], *self.v.shape[1:]))
        k[:, :, :n], v[:, :, :n] = self.k[index, :, :n], self.v[index, :, :n]
        self.k, self.v = k, v

    def reset(self) -> None:
        self.length = 0

    @property
    def batch_size(self) -> int | None:
        return None if self.k is None else self.k.shape[0]

    def to(self, device: torch.device | str) -> KVCache:
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.to(device), self.v.to(device)
        return self
