"""The fp32 product of inference on the CPU: the fastest kernel for the hardware, one function for it.

Training runs ``F.linear`` (MKL on x86 CPUs), the reference path every equivalence test checks. Inference
(no autograd, CPU, fp32) goes through :func:`linear`, which uses the kernel chosen once per process
(:func:`fp32_kernel`):

* ``"onednn"``: oneDNN's fp32 product (``torch.ops.mkldnn._linear_pointwise``, the op Inductor's CPU linear
  lowers to) on the weight as it is stored, [out, in], no copy; the GEMM backend CTranslate2 selects on
  non-Intel x86 CPUs. Measured on 2 Dec 2026 (AMD EPYC Zen 4, 2 threads; each layer its own weights, so
  they stream from memory as in a model; oneDNN vs MKL, ms per pass through all the linears): GPT-2 124M
  1 row 31.5 vs 47.0, 8 rows 46.0 vs 78.5, 256 rows 349 vs 494; the d 256 translation model 1 / 64 / 1280
  rows 2.26 / 6.42 / 97.1 vs 3.20 / 9.80 / 129.9; MiniLM 384 / 960 rows 47.0 / 114.5 vs 55.7 / 121.1. End
  to end, GPT-2 greedy generation: 28.2 vs 22.8 tokens/s at batch 1, 119.9 vs 64.0 at batch 8, tokens
  identical (``docs/speed.md``).
* ``"mkl"``: ``F.linear`` (with :class:`~attnkit.layers.linear.FastLinear`'s [in, out] copies for one-row
  products).

Under ``torch.compile`` the oneDNN product is the custom op ``attnkit::onednn_linear`` (Inductor's own
oneDNN linear lowering needs the weights frozen into constants, which would go stale when they change; the
op keeps them graph inputs and Inductor fuses the element-wise work around it).

The default is ``"onednn"`` where PyTorch has oneDNN and the CPU is not Intel's (CTranslate2's rule) and
``"mkl"`` on Intel CPUs (not measured by this project; CTranslate2 uses MKL there).
``ATTNKIT_FP32_KERNEL=mkl|onednn`` or :func:`set_fp32_kernel` overrides it. Both compute the same fp32
products in different summation orders: results differ by rounding (about 1e-7 relative).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

FP32_KERNELS = ("mkl", "onednn")
ENV_VAR = "ATTNKIT_FP32_KERNEL"


def cpu_vendor() -> str:
    """The CPU's vendor string as Linux reports it ("GenuineIntel", "AuthenticAMD", ...), "" if unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def default_fp32_kernel(vendor: str | None = None, onednn: bool | None = None) -> str:
    """The kernel :func:`linear` uses unless told otherwise: ``$ATTNKIT_FP32_KERNEL`` if set, else "onednn"
    when PyTorch has oneDNN and the CPU is not Intel's, else "mkl". Raises ValueError for a bad variable."""
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env:
        if env not in FP32_KERNELS:
            raise ValueError(f"{ENV_VAR}={env!r}: expected one of {', '.join(FP32_KERNELS)}")
        return env
    onednn = torch.backends.mkldnn.is_available() if onednn is None else onednn
    vendor = cpu_vendor() if vendor is None else vendor
    return "onednn" if onednn and vendor != "GenuineIntel" else "mkl"


_kernel: str | None = None  # chosen on first use


def fp32_kernel() -> str:
    """The fp32 inference kernel of this process ("mkl" or "onednn"; see the module docstring)."""
    global _kernel
    if _kernel is None:
        _kernel = default_fp32_kernel()
    return _kernel


def set_fp32_kernel(name: str | None) -> None:
    """Use kernel ``name`` ("mkl" or "onednn") from now on; None goes back to the default."""
    global _kernel
    if name is not None and name not in FP32_KERNELS:
        raise ValueError(f"unknown fp32 kernel {name!r}: expected one of {', '.join(FP32_KERNELS)}")
    _kernel = name


@contextmanager
def using_fp32_kernel(name: str) -> Iterator[None]:
    """``with using_fp32_kernel("mkl"): ...`` runs the block with that kernel, then restores the previous."""
    before = _kernel
    set_fp32_kernel(name)
    try:
        yield
    finally:
        set_fp32_kernel(before)


def onednn_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`linear` of ``x`` and ``weight`` takes oneDNN (no autograd, CPU, fp32, kernel "onednn")."""
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and fp32_kernel() == "onednn")


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x W^T + b``: x [..., in], weight [out, in], bias [out] or None -> [..., out]. ``F.linear`` when
    autograd is on (training: the reference path), off the CPU or outside fp32; else the process's fp32
    kernel (:func:`fp32_kernel`)."""
    if onednn_applies(x, weight):
        if torch.compiler.is_compiling():
            return torch.ops.attnkit.onednn_linear(x, weight, bias)
        return onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """oneDNN's fp32 ``x W^T + b`` (shapes as :func:`linear`), whatever the kernel choice; no autograd."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@torch.library.custom_op("attnkit::onednn_linear", mutates_args=())
def _onednn_linear_op(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """:func:`onednn_linear` as an operator that ``torch.compile`` keeps whole (inference only: no autograd)."""
    return onednn_linear(x, weight, bias)


@_onednn_linear_op.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


_compiled: dict[Callable, Callable] = {}


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)`` (Inductor, shapes made dynamic only when they change), made once per function on
    first use, so that importing compiles nothing. Used for decoding steps (``GPTSession(compile=True)``)."""
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=None)
    return _compiled[fn]
