"""Tensors derived from parameters (a transposed or a stacked weight), cached for inference.

Decoding calls the same layers hundreds of times with unchanged weights; re-deriving a copy at every call
(``torch.cat`` of the q/k/v weights, a transpose) costs about as much as a small matrix product. A
:class:`DerivedTensor` makes its copy on first use and makes it again only when a source tensor changed:
replaced (another storage) or updated in place (an optimizer step, ``load_state_dict``, ``copy_``), which
PyTorch records in the tensor's version counter. Sources created under ``torch.inference_mode`` have no
version counter; their copy is made at every call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class DerivedTensor:
    """A cached ``make(*sources)``, made again when any source changes. Meant for no-grad use (the copy
    carries no autograd history)."""

    def __init__(self, make: Callable[..., Tensor]) -> None:
        self.make = make
        self.value: Tensor | None = None
        self._key: tuple[tuple[int, int], ...] | None = None

    def get(self, sources: Sequence[Tensor]) -> Tensor:
        """The derived tensor of ``sources`` (the cached one while none of them changed)."""
        if any(s.is_inference() for s in sources):  # no version counter: changes cannot be seen
            return self._make(sources)
        key = tuple((s.data_ptr(), s._version) for s in sources)
        if self.value is None or self._key != key:
            self.value, self._key = self._make(sources), key
        return self.value

    def _make(self, sources: Sequence[Tensor]) -> Tensor:
        with torch.no_grad():
            return self.make(*(s.detach() for s in sources))

    def release(self) -> None:
        """Free the cached copy (it is made again on the next ``get``)."""
        self.value, self._key = None, None
