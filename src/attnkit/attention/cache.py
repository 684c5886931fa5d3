"""Key/value cache for incremental decoding (as in gpt-fast: allocated once, written by position).

One ``KVCache`` serves one attention module of one layer. Self-attention appends the new step's keys and
values and attends over everything written so far, so a decoding step costs O(t) instead of recomputing
the O(t^2) prefix. Cross-attention stores the encoder's projected keys and values once ("static") and
reuses them at every step. ``reorder`` selects batch rows, which beam search needs.

The cache holds as many heads as it is given: with grouped-query attention that is the key/value heads
only (``n_kv_heads / n_heads`` of a full cache). With a sliding ``window`` W (every query sees only the last
W keys, Mistral's attention) it keeps only what later queries can see: its buffer holds ``min(max_len, 2W)``
positions, and when it is full the last W - 1 keys move to the front of a fresh buffer (one copy of W - 1
keys every W or so steps, about one key per step), so memory does not grow with the generated length.
``start`` is then the absolute position of the first key held.

Compiled decoding steps (``torch.compile``) need the same shapes at every step to reuse their code:
:class:`StaticKVCache` is the fixed-capacity cache they write into (gpt-fast's static cache), attended in
full under a key mask. A decoding step of a small model is many small operations (norms, activations,
residual sums, attention over a few keys) between its matrix products; eagerly each costs a dispatch and a
pass over memory, a fixed cost per step that dominates at batch 1, and compiled they fuse into a few loops
around the products. Capacities are rounded up to a multiple of :data:`CAPACITY_STEP` (:func:`static_capacity`)
so that calls of similar lengths share one compiled step; a new batch size or capacity compiles again
(tens of seconds on a 2-core CPU the first time; later processes reuse Inductor's on-disk cache).
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Preallocated keys and values [B, H, capacity, Dh], allocated on the first ``append``; capacity is
    ``max_len``, or ``min(max_len, 2 * window)`` with a sliding window."""

    def __init__(self, max_len: int, window: int | None = None) -> None:
        if max_len <= 0:
            raise ValueError(f"KVCache max_len must be positive, got {max_len}")
        if window is not None and window < 1:
            raise ValueError(f"KVCache window must be >= 1, got {window}")
        self.max_len, self.window = max_len, window
        self.capacity = max_len if window is None else min(max_len, 2 * window)
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0  # positions written so far
        self.start = 0  # absolute position of the first key held (0 without a window)

    @property
    def filled(self) -> bool:
        """Whether anything was written (a cross-attention cache is filled once, at the first step)."""
        return self.length > 0

    @property
    def held(self) -> int:
        """Number of positions held now, ``length - start``."""
        return self.length - self.start

    def next_start(self, t: int) -> int:
        """The ``start`` that appending ``t`` positions will give: the keys ``append`` returns cover the
        positions [next_start(t), length + t). Moves only when a windowed buffer is full: then the keys
        kept are the last W - 1, those the new queries may still see."""
        if self.window is None or self.k is None or self.held + t <= self.k.shape[2]:
            return self.start
        return self.length - min(self.held, self.window - 1)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H, t, Dh] after the positions written so far; return the keys and values held,
        [B, H, length + t - start, Dh] (views of the preallocated buffers; ``start`` is 0 without a window)."""
        t = k.shape[2]
        if self.k is None:
            b, h, _, dh = k.shape
            cap = max(self.capacity, t)  # a prompt longer than a windowed buffer is held whole, once
            self.k = k.new_empty(b, h, cap, dh)  # positions >= length are never read
            self.v = v.new_empty(b, h, cap, v.shape[-1])
        assert self.v is not None
        if k.shape[0] != self.k.shape[0]:
            raise ValueError(f"KVCache holds batch {self.k.shape[0]}, got keys {tuple(k.shape)}")
        if self.length + t > self.max_len:
            raise ValueError(
                f"KVCache is full: {self.length} positions written, {t} more do not fit in max_len "
                f"{self.max_len}"
            )
        start = self.next_start(t)
        if start != self.start:
            self._keep_from(start, t)
        n = self.held
        self.k[:, :, n : n + t] = k
        self.v[:, :, n : n + t] = v
        self.length += t
        return self.k[:, :, : n + t], self.v[:, :, : n + t]

    def _keep_from(self, start: int, t: int) -> None:
        """Move the keys from position ``start`` on to the front of a fresh buffer with room for t more."""
        assert self.k is not None and self.v is not None
        first, n = start - self.start, self.length - start
        cap = max(self.capacity, n + t)
        k = self.k.new_empty(*self.k.shape[:2], cap, self.k.shape[3])
        v = self.v.new_empty(*self.v.shape[:2], cap, self.v.shape[3])
        k[:, :, :n], v[:, :, :n] = self.k[:, :, first : first + n], self.v[:, :, first : first + n]
        self.k, self.v, self.start = k, v, start

    def view(self) -> tuple[Tensor, Tensor]:
        """All keys and values held, [B, H, length - start, Dh]."""
        if self.k is None or self.v is None:
            raise ValueError("KVCache is empty")
        return self.k[:, :, : self.held], self.v[:, :, : self.held]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` [B'] (in that order; B' may differ from B, e.g. to expand beams or drop
        finished rows). Only the written positions are copied, and with B' == B only the rows that change
        (``index[i] != i``): beam search keeps most hypotheses in their rows, so a step copies few."""
        if self.k is None or self.v is None:
            return
        n = self.held
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
        self.length = self.start = 0

    @property
    def batch_size(self) -> int | None:
        return None if self.k is None else self.k.shape[0]

    def to(self, device: torch.device | str) -> KVCache:
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.to(device), self.v.to(device)
        return self


CAPACITY_STEP = 64


def static_capacity(n: int, limit: int) -> int:
    """``n`` positions rounded up to a multiple of :data:`CAPACITY_STEP`, at most ``limit`` (and >= n)."""
    return max(n, min(-(-n // CAPACITY_STEP) * CAPACITY_STEP, limit))


class StaticKVCache:
    """A cache of fixed shape for compiled decoding steps (gpt-fast's static cache): keys and values
    [B, H, capacity, Dh], zero beyond what was written, so that every step has the same shapes.

    ``append`` writes the step's keys and values at the positions in ``write_at`` (a [t] tensor the
    session updates in place between steps; one tensor shared by every layer) and returns the whole
    buffers: the caller's key mask says which positions are real (positions not yet written hold zeros,
    never NaN, so masking them out is exact). It is made from a filled :class:`KVCache` (the prompt's step
    runs uncompiled)."""

    filled = True  # (a constant: a compiled step reads it without depending on a length)

    def __init__(self, k: Tensor, v: Tensor, write_at: Tensor | None) -> None:
        self.k, self.v, self.write_at = k, v, write_at

    @classmethod
    def holding(cls, cache: KVCache, capacity: int, write_at: Tensor | None) -> StaticKVCache:
        """The keys and values ``cache`` holds (it must start at position 0) in buffers of ``capacity``;
        ``write_at`` None for a cache that is only read (cross-attention's encoder keys and values)."""
        if cache.start != 0:
            raise ValueError("a static cache holds every position from 0 (no sliding window)")
        k, v = cache.view()  # (B, H, n, Dh)
        if capacity < k.shape[2]:
            raise ValueError(f"static cache capacity {capacity} < the {k.shape[2]} positions held")
        big_k = k.new_zeros(*k.shape[:2], capacity, k.shape[3])
        big_v = v.new_zeros(*v.shape[:2], capacity, v.shape[3])
        big_k[:, :, : k.shape[2]], big_v[:, :, : v.shape[2]] = k, v
        return cls(big_k, big_v, write_at)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H, t, Dh] at positions ``write_at`` [t]; return the buffers [B, H, capacity, Dh]."""
        assert self.write_at is not None, "a read-only static cache"
        self.k.index_copy_(2, self.write_at, k)
        self.v.index_copy_(2, self.write_at, v)
        return self.k, self.v

    def view(self) -> tuple[Tensor, Tensor]:
        """The buffers [B, H, capacity, Dh] (what a read-only cache serves)."""
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` [B'] (B' == B: in place, the shapes stay)."""
        if index.shape[0] == self.k.shape[0]:
            self.k.copy_(self.k.index_select(0, index))
            self.v.copy_(self.v.index_select(0, index))
        else:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
