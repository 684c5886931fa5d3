"""A Linear layer for inference on the CPU: the fastest fp32 kernel, and a one-row weight layout for MKL.

:class:`FastLinear` keeps its parameters exactly as ``nn.Linear`` (same state dict, same training path).
Without autograd on the CPU its products take :func:`attnkit.kernels.linear`'s kernel. With the "mkl"
kernel, decoding one token at a time multiplies a single row by every weight matrix, and MKL's
matrix-vector product reads a matrix faster when its long dimension is contiguous: ``x @ W_t`` with ``W_t =
weight.T`` stored [in, out] (as GPT-2's Conv1D keeps it) streams a wide matrix at about 18-26 GB/s on this
project's CPU, ``F.linear(x, weight)`` with the usual [out, in] storage at about 13-14 GB/s
(``docs/gpt.md``). So for a one-row input it multiplies by a cached contiguous copy of ``weight.T`` when
``out_features >= in_features``. The copy costs the weight's memory again; it exists only inside a
:func:`~attnkit.derived.frozen_weights` block (each decoding call opens one), is made on first use there and
dropped when the block ends (see :mod:`attnkit.derived` for why). oneDNN needs no copy: it reads the
[out, in] weight faster than MKL reads either layout (:mod:`attnkit.kernels`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.derived import DerivedOwner, DerivedTensor, frozen
from attnkit.kernels import fp32_kernel, linear


def _transposed(weight: Tensor) -> Tensor:
    return weight.t().contiguous()


class FastLinear(DerivedOwner, nn.Linear):
    """``nn.Linear`` (x [..., in] -> [..., out]) whose no-grad CPU products take :func:`attnkit.kernels.linear`'s fast
    kernel; with the "mkl" kernel, one-row products inside a frozen-weights block read a cached [in, out]
    copy of the weight (``out_features >= in_features``). Parameters, state dict and training path are
    ``nn.Linear``'s. ``packing = False`` turns the copy off (and ``release`` frees it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.packing = True
        self._packed = DerivedTensor(_transposed)  # (in, out)
        self._watch_weights()

    @classmethod
    def like(cls, lin: nn.Linear) -> FastLinear:
        """A FastLinear sharing ``lin``'s parameters (ties to other modules are kept)."""
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta")
        new.weight = lin.weight
        new.bias = lin.bias
        return new

    def release(self) -> None:
        self._packed.release()

    def _weight_t(self) -> Tensor:
        return self._packed.get((self.weight,))

    def forward(self, x: Tensor) -> Tensor:
        if (self.packing and x.numel() == self.in_features and self.out_features >= self.in_features
                and x.device.type == "cpu" and not torch.is_grad_enabled() and frozen()
                and fp32_kernel() == "mkl" and not torch.compiler.is_compiling()):
            row = x.reshape(1, self.in_features)
            out = row @ self._weight_t() if self.bias is None else torch.addmm(self.bias, row, self._weight_t())
            return out.view(*x.shape[:-1], self.out_features)
        return linear(x, self.weight, self.bias)  # oneDNN where it applies, else F.linear


def use_fast_linears(module: nn.Module) -> None:
    """Replace every plain ``nn.Linear`` inside ``module`` by a :class:`FastLinear` sharing its parameters."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, FastLinear.like(child))
