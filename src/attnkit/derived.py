"""Tensors derived from parameters (a transposed or a stacked weight), reused inside an inference block.

Decoding calls the same layers hundreds of times with unchanged weights; re-deriving a copy at every call
(``torch.cat`` of the q/k/v weights, a transpose) costs about as much as a small matrix product. A
:class:`DerivedTensor` keeps its copy only **inside a** :func:`frozen_weights` **block**, the promise that
the weights do not change while it lasts (``generate``, ``beam_search``, ``Translator.translate``,
``embed_sentences`` and the evaluations each run in one). Outside such a block every call derives afresh
(or, as FastLinear and multi-head attention do, takes the path that needs no copy).

Why not a cheaper rule: keying the copy on the parameters' storage and version counter (what attnkit did
until 2026-12) is not safe. ``torch.optim.AdamW(fused=True)`` on the CPU updates parameters in place
without bumping their version counter, and so do ``p.data.copy_()`` and other writes through ``.data``;
a stale copy then served every later evaluation in a training process. A content fingerprint would read
every weight at every call, as much as the product it is meant to save. A block's lifetime is known
instead: it is opened by the code that decodes and closed when decoding ends, so nothing written between
two blocks can be missed. Inside a block, the cache is also dropped by every optimizer step (a global
optimizer hook: any ``torch.optim`` optimizer, fused or not), by ``load_state_dict`` and ``train()`` of
the module that owns it (hooks in the owners) and when a source's storage or version changes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook

_state = threading.local()  # depth: how many frozen_weights blocks this thread is inside
_epoch = 0  # bumped whenever cached copies may be stale; a copy made in another epoch is never used
_holders: weakref.WeakSet[DerivedTensor] = weakref.WeakSet()  # DerivedTensors that hold a copy now


def invalidate() -> None:
    """Forget every derived copy (they are made again on next use). Called on optimizer steps, on
    ``load_state_dict`` and ``train()`` of their owners, and when the outermost block opens or closes."""
    global _epoch
    _epoch += 1
    for holder in list(_holders):
        holder.release()


def frozen() -> bool:
    """Whether this thread is inside a :func:`frozen_weights` block (derived copies may be reused)."""
    return getattr(_state, "depth", 0) > 0


@contextmanager
def frozen_weights() -> Iterator[None]:
    """A block in which the parameters of the models it runs do not change (except by an optimizer step or
    ``load_state_dict``, which are seen): derived weights are made once and reused. Blocks nest; the
    outermost one starts and ends with every copy dropped, so the copies never outlive it."""
    depth = getattr(_state, "depth", 0)
    if depth == 0:
        invalidate()
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth
        if depth == 0:
            invalidate()


def _after_optimizer_step(optimizer, args, kwargs) -> None:  # noqa: ANN001
    invalidate()


# Every optimizer step of every torch.optim optimizer, fused kernels included, drops the copies.
register_optimizer_step_post_hook(_after_optimizer_step)


def _loaded(module: torch.nn.Module, incompatible_keys) -> None:  # noqa: ANN001
    invalidate()


class DerivedOwner:
    """Mixin for an ``nn.Module`` that holds DerivedTensors: loading weights into it (``load_state_dict`` on
    it or on any parent) or changing its mode (``train()`` / ``eval()``) drops every derived copy. Call
    ``_watch_weights()`` in ``__init__``."""

    def _watch_weights(self) -> None:
        self.register_load_state_dict_post_hook(_loaded)  # type: ignore[attr-defined]

    def train(self, mode: bool = True):  # noqa: ANN201
        invalidate()
        return super().train(mode)  # type: ignore[misc]


class DerivedTensor:
    """``make(*sources)``, made once per :func:`frozen_weights` block and made afresh at every call outside
    one. Meant for no-grad use (the copy carries no autograd history)."""

    def __init__(self, make: Callable[..., Tensor]) -> None:
        self.make = make
        self.value: Tensor | None = None
        self._key: tuple | None = None

    def get(self, sources: Sequence[Tensor]) -> Tensor:
        """The derived tensor of ``sources``: the block's cached copy inside a frozen block, else a new one."""
        if not frozen():
            return self._make(sources)
        # Storage and version still guard against a replaced parameter or a counted in-place write; tensors
        # made under inference_mode have no version counter (their storage alone is the key).
        key = (_epoch, *((s.data_ptr(), None if s.is_inference() else s._version) for s in sources))
        if self.value is None or self._key != key:
            self.value, self._key = self._make(sources), key
            _holders.add(self)
        return self.value

    def _make(self, sources: Sequence[Tensor]) -> Tensor:
        with torch.no_grad():
            return self.make(*(s.detach() for s in sources))

    def release(self) -> None:
        """Free the cached copy (it is made again on the next ``get``)."""
        self.value, self._key = None, None
        _holders.discard(self)
