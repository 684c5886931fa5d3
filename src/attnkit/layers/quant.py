"""Quantized and low-precision inference: int8 and bf16 versions of a model's linear layers and token
embeddings, beside the fp32 reference path (issue 16; ``docs/speed.md`` has the measurements).

``quantize(model, "int8")`` replaces, in place, every ``nn.Linear`` (the output projection included) by an
:class:`Int8Linear` and every token ``nn.Embedding`` by a :class:`QuantEmbedding`; ``"bf16"`` does the same
with bf16 weights; ``"fp32"`` leaves the model as it is (bit for bit). LayerNorm, softmax, attention over
the KV cache and residual sums stay fp32 in both modes: only the matrix products change.

* int8: weights symmetric per output channel, ``W ~ s_w[n] * q[n, k]`` with ``s_w[n] = max_k |W[n, k]| /
  127``; activations quantized at run time per row (per token), ``x ~ s_x[m] * p[m, k]``, so a row's result
  does not depend on the other rows of its batch. The product ``sum_k p q`` is exact in int32, then scaled
  by ``s_x[m] s_w[n]``. On x86 CPUs with VNNI or AMX it runs in oneDNN's u8 x s8 kernel
  (``torch.ops.onednn.qlinear_pointwise``, PyTorch's own op, the one the x86 Inductor int8 path emits):
  the activation is stored as ``p + 128`` in uint8, the form VNNI multiplies, and oneDNN removes the 128 with a
  compensation it precomputes. Elsewhere (AVX2 only, where oneDNN's pair sums saturate) ``torch._int_mm`` does
  the product.
* bf16: weights stored in bf16; each product casts its input to bf16 and its output back (oneDNN's bf16
  kernels accumulate in fp32). Chosen only where the CPU has native bf16 units (AVX512-BF16, AMX) or on
  a GPU: emulated bf16 is slower than fp32.
* A weight shared by a token embedding and the output projection (tied) stays shared: one int8 (or bf16)
  matrix and one scale vector serve both (a per-row scale of a [V, E] matrix is the per-token scale of the
  embedding and the per-output-channel scale of the projection).
* ``onednn_fp32(model)`` keeps fp32 but runs the products in oneDNN (:class:`OneDNNLinear`), the GEMM
  backend CTranslate2 picks on AMD CPUs, where PyTorch's ``F.linear`` uses MKL: same precision, another
  summation order, so it is an opt-in beside the reference path.

Two fast paths of the fp32 model read ``weight`` directly and are bypassed explicitly: FastLinear modules
are replaced like any ``nn.Linear``, and each multi-head attention's :class:`StackedProjections` (one
product for q, k and v) is replaced by a :class:`QuantizedStack`, which stacks the quantized weights (row
quantization makes the stacked product equal to the separate ones).

torchao's configs (``Int8DynamicActivationInt8WeightConfig``, ``Int8WeightOnlyConfig``) were measured first
(``bench/engine_speed.py --rows kernels``): in eager mode on this project's CPU the first re-derives the
weight compensation and runs several elementwise passes per product, the second dequantizes the whole
weight at every call; both are slower than the direct oneDNN call below. ``torch.ao.quantization`` is
deprecated and not used.
"""

from __future__ import annotations

import functools
import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from attnkit.attention.fast import StackedProjections

DTYPES = ("fp32", "bf16", "int8")
METADATA_KEY = "attnkit.quantized"  # the safetensors metadata entry naming the mode of a saved model
_U8_OFFSET = 128  # uint8 activations hold p + 128, p in [-127, 127]


# ------------------------------------------------------------------------------- hardware and choice
@dataclass(frozen=True)
class Capabilities:
    """What a device offers for low-precision products: ``bf16``: native bf16 matrix units (AVX512-BF16
    or AMX-BF16 on a CPU, bf16 tensor cores on a GPU); ``int8``: int8 dot-product instructions the int8
    kernel uses (AVX512-VNNI, AVX-VNNI or AMX-INT8) with oneDNN present; ``names``: the features seen."""

    device: str
    bf16: bool
    int8: bool
    names: tuple[str, ...] = ()


def capabilities(device: str | torch.device = "cpu") -> Capabilities:
    """The low-precision features of ``device`` as PyTorch reports them (``torch.cpu._is_*_supported``)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return Capabilities("cuda", torch.cuda.is_bf16_supported(), False, ("cuda-bf16",))
    if dev.type != "cpu":
        return Capabilities(dev.type, False, False)
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported",
              "vnni": "_is_vnni_supported"}
    names = tuple(name for name, fn in probes.items() if getattr(torch.cpu, fn, lambda: False)())
    onednn = torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")
    return Capabilities("cpu", "avx512_bf16" in names or "amx" in names, onednn and bool({"vnni", "amx"} & set(names)),
                        names)


class DtypeChoice(NamedTuple):
    dtype: str  # "fp32", "bf16" or "int8"
    reason: str  # one sentence, for the user


WORKS = ("decode", "encode")


def pick_dtype(requested: str = "auto", device: str | torch.device = "cpu", caps: Capabilities | None = None,
               work: str = "decode") -> DtypeChoice:
    """The inference mode for ``requested`` ("auto" or one of :data:`DTYPES`) on ``device``.

    "auto" picks the fastest mode the hardware has that stays inside the accuracy bounds of issue 16
    (measured in docs/speed.md). ``work`` "decode" (generation, translation: one token per row and step,
    memory-bound): int8 where the CPU has int8 dot-product instructions, else bf16 where it has native bf16
    units (a GPU included), else fp32. ``work`` "encode" (embeddings, classification: whole sentences per
    product, compute-bound): bf16 where native, else fp32; never int8, whose per-row activation rounding
    put MiniLM's sentence embeddings below the 0.995 cosine floor at no gain in speed over bf16. An explicit
    mode is returned as it is, unless the hardware cannot run it (int8 off the CPU)."""
    caps = capabilities(device) if caps is None else caps
    if requested not in ("auto", *DTYPES):
        raise ValueError(f"dtype must be 'auto' or one of {DTYPES}, got {requested!r}")
    if work not in WORKS:
        raise ValueError(f"work must be one of {WORKS}, got {work!r}")
    features = ", ".join(caps.names) or "none"
    if requested == "int8" and caps.device != "cpu":
        raise ValueError(f"int8 inference runs on the CPU only, not on {caps.device}")
    if requested != "auto":
        return DtypeChoice(requested, f"{requested} as requested ({caps.device} features: {features})")
    if caps.int8 and work == "decode":
        return DtypeChoice("int8", f"auto: int8, the CPU has int8 dot-product instructions ({features})")
    if caps.bf16:
        return DtypeChoice("bf16", f"auto: bf16, the {caps.device} has native bf16 units ({features})")
    return DtypeChoice("fp32", f"auto: fp32, no native {'int8 or ' if work == 'decode' else ''}bf16 units "
                               f"({caps.device} features: {features})")


# ------------------------------------------------------------------------------- int8 arithmetic
def quantize_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: w [N, K] -> (q int8 [N, K], scale fp32 [N]) with w ~ scale[:, None] * q,
    |w - scale q| <= scale / 2 (a zero row gets scale 1 and q = 0)."""
    amax = w.detach().abs().amax(dim=1).float()  # (N,)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(w.detach().float() / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def quantize_activations(x: Tensor) -> tuple[Tensor, Tensor]:
    """Dynamic per-row int8 of x [M, K] -> (p + 128 as uint8 [M, K], row max |x| [M, 1]); x ~ (max / 127) p,
    p = round(127 x / max) in [-127, 127].

    Written with the operations measured fastest here (docs/speed.md): abs().amax() rather than an
    inf-norm (10-40x slower on this CPU), rounding then a cast to int8, whose bytes plus 128 (mod 256) are
    p + 128 as uint8 (a direct float-to-uint8 cast is 3-6x slower than to int8)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp_(min=1e-30)  # (M, 1); a zero row stays 0
    p = (x * (127.0 / amax)).round_().to(torch.int8)
    return p.view(torch.uint8).add_(_U8_OFFSET), amax


# Products of at most 16 rows and 4M multiply-adds (M * in * out) take the weight-only kernel: measured on
# this project's CPU (docs/speed.md), quantizing the activations and waking oneDNN's threads cost more there
# than the int8 arithmetic saves (a decoding step of one sentence: M = 1 to 5); the weight-only kernel is a
# matrix-vector loop, slower than a GEMM from a few dozen rows on. Others take the int8 x int8 kernel.
WEIGHT_ONLY_MAX_ROWS = 16
WEIGHT_ONLY_MAX_MACS = 4 * 2**20
KERNELS = ("auto", "onednn", "int_mm", "weight_only")


class Int8Linear(nn.Module):
    """``y = x W^T + b`` (x [..., in] -> [..., out]) with W in int8 per output channel. Buffers: ``qweight``
    int8 [out, in], ``scale`` fp32 [out], ``bias`` fp32 [out] or None.

    ``kernel`` "auto" picks per call: "weight_only" for small products where the CPU has native bf16
    (``torch._weight_int8pack_mm``: x in bf16 times the int8 rows, scaled after; no activation
    quantization), else "onednn" (x quantized per row, u8 x s8 in oneDNN, on CPUs with VNNI or AMX) or else "int_mm"
    (``torch._int_mm``). The kernel's packed copy of the weight is derived on first use (not saved; see
    :func:`int8_linear`). Under ``torch.compile`` the product is the operator ``attnkit::int8_linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None) -> None:  # noqa: ANN001
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(out_features, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.kernel = "auto"

    @classmethod
    def from_parts(cls, qweight: Tensor, scale: Tensor, bias: Tensor | None) -> Int8Linear:
        """An Int8Linear holding these tensors (shared, not copied: a tied embedding keeps them too)."""
        new = cls(qweight.shape[1], qweight.shape[0], bias is not None, device="meta")
        new.qweight, new.scale = qweight, scale
        new.bias = None if bias is None else bias.detach().float().clone()
        return new

    def dequantized(self) -> Tensor:
        """The weight it multiplies by, scale[:, None] * q, fp32 [out, in] (for tests and checks)."""
        return self.qweight.float() * self.scale[:, None]

    def _choose(self, rows: int) -> str:
        return choose_int8_kernel(self.kernel, rows, self.in_features, self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return torch.ops.attnkit.int8_linear(x, self.qweight, self.scale, self.bias, self.kernel)
        return int8_linear(x, self.qweight, self.scale, self.bias, self.kernel)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"kernel={self.kernel}")


def choose_int8_kernel(kernel: str, rows: int, in_features: int, out_features: int) -> str:
    """The kernel an int8 product of ``rows`` rows takes (``kernel`` "auto": see :class:`Int8Linear`)."""
    if kernel != "auto":
        return kernel
    if (rows <= WEIGHT_ONLY_MAX_ROWS and rows * in_features * out_features <= WEIGHT_ONLY_MAX_MACS
            and _weight_only_ok(in_features) and _native_bf16()):
        return "weight_only"
    return "onednn" if _onednn_int8() else "int_mm"


# id(qweight) -> (a weak reference to it, the key of its contents, {kernel: that kernel's weight}). Held
# outside the module so that the compiled operator, which sees tensors and not modules, finds them too;
# one entry per kernel, since one decoding call uses several (a prompt or an encoder pass takes oneDNN, the
# one-row steps the weight-only kernel): a single entry was re-packed at every switch (31% of GPT-2 int8
# generation, docs/speed.md). An entry goes when its qweight is freed, and is remade when qweight changes.
_DERIVED: dict[int, tuple[weakref.ref, tuple, dict[str, Tensor]]] = {}


def _forget(key: int, _ref: weakref.ref) -> None:
    _DERIVED.pop(key, None)


def _kernel_weight(qweight: Tensor, kernel: str) -> Tensor:
    """What ``kernel`` multiplies by besides the activations: oneDNN's packed weight, the (in, out) copy
    for _int_mm, or unit bf16 scales for the weight-only kernel (it reads ``qweight`` itself; the fp32
    scales are applied after, so they are not rounded to bf16)."""
    key = (qweight.data_ptr(), qweight.device, None if qweight.is_inference() else qweight._version)
    entry = _DERIVED.get(id(qweight))
    if entry is None or entry[0]() is not qweight or entry[1] != key:
        ref = weakref.ref(qweight, functools.partial(_forget, id(qweight)))
        entry = _DERIVED[id(qweight)] = (ref, key, {})
    held = entry[2]
    if kernel not in held:
        with torch.no_grad():
            if kernel == "onednn":
                held[kernel] = torch.ops.onednn.qlinear_prepack(qweight, None)
            elif kernel == "int_mm":
                held[kernel] = qweight.t().contiguous()
            else:
                held[kernel] = torch.ones(qweight.shape[0], dtype=torch.bfloat16, device=qweight.device)
    return held[kernel]


def int8_linear(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None, kernel: str = "auto") -> Tensor:
    """``x (scale[:, None] * qweight)^T + bias``: x [..., in], qweight int8 [out, in], scale [out] -> [..., out]
    in x's dtype (:class:`Int8Linear`'s product; ``kernel`` as its attribute)."""
    shape, out_features = x.shape, qweight.shape[0]
    rows = x.reshape(-1, qweight.shape[1])  # (M, in)
    if rows.shape[0] == 0:
        return x.new_empty(*shape[:-1], out_features)
    kernel = choose_int8_kernel(kernel, rows.shape[0], qweight.shape[1], out_features)
    w = _kernel_weight(qweight, kernel)
    if kernel == "weight_only":  # (M, out) = s_w[n] * sum_k bf16(x) q, bf16 product, fp32 scale and bias
        y = torch._weight_int8pack_mm(rows.to(torch.bfloat16), qweight, w) * scale  # fp32
    else:
        xq, amax = quantize_activations(rows)  # (M, in) uint8, (M, 1)
        if kernel == "onednn":  # (M, out) = s_w[n] * sum_k (xq - 128) q, fp32
            y = torch.ops.onednn.qlinear_pointwise(xq, 1.0, _U8_OFFSET, w, scale, _zero_points(scale),
                                                   None, 1.0, 0, torch.float32, "none", [], "")
        else:
            comp = qweight.sum(1, dtype=torch.int32) * _U8_OFFSET  # (out,) sum of the 128 offsets
            y = (torch._int_mm(xq, w) - comp) * scale
        y = y.mul_(amax * (1 / 127))  # s_x s_w sum p q
    # In-place multiply and add: torch.addcmul with broadcast operands measured 5-50x slower here.
    if bias is not None:
        y = y.add_(bias)
    return y.to(x.dtype).view(*shape[:-1], out_features)


@torch.library.custom_op("attnkit::int8_linear", mutates_args=())
def _int8_linear_op(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None, kernel: str) -> Tensor:
    """:func:`int8_linear` as an operator ``torch.compile`` keeps whole (its kernels' packed weights are
    Python state)."""
    return int8_linear(x, qweight, scale, bias, kernel)


@_int8_linear_op.register_fake
def _(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None, kernel: str) -> Tensor:
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


def _weight_only_ok(in_features: int) -> bool:
    # torch._weight_int8pack_mm reads the input width in blocks of 16 on the CPU: measured (torch 2.13),
    # other widths give wrong results or abort, so they never reach it.
    return in_features % 16 == 0


@functools.cache
def _native_bf16() -> bool:
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


_ZERO_POINTS: dict[tuple, Tensor] = {}


def _zero_points(scale: Tensor) -> Tensor:
    key = (scale.shape[0], scale.device)
    if key not in _ZERO_POINTS:
        _ZERO_POINTS[key] = torch.zeros(scale.shape[0], dtype=torch.long, device=scale.device)
    return _ZERO_POINTS[key]


@functools.cache
def _onednn_int8() -> bool:
    """Whether oneDNN's u8 x s8 product is used: PyTorch has it and the CPU has VNNI or AMX
    (:func:`capabilities`). Without them (AVX2 only) oneDNN sums pairs of u8 x s8 products in saturating
    16 bits (vpmaddubsw): measured on an AVX2 AMD EPYC, errors of 2.8 where the quantization bound is 1.0;
    ``torch._int_mm`` is exact there."""
    return capabilities("cpu").int8


class _Linear(nn.Module):
    """What the low-precision linears share: in_features, out_features, a ``bias`` buffer, their repr."""

    in_features: int
    out_features: int

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class BF16Linear(_Linear):
    """``y = x W^T + b`` with W and b stored in bf16; x is cast to bf16 for the product and y back to x's
    dtype (oneDNN accumulates in fp32). Buffers: ``weight`` bf16 [out, in], ``bias`` bf16 [out] or None."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16).clone())

    def dequantized(self) -> Tensor:
        return self.weight.float()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)



# OneDNNLinear leaves products of at most this many multiply-adds to F.linear (MKL): one row times a weight
# of up to a million numbers cost oneDNN more call overhead than it saved in a cache-resident measurement
# (docs/speed.md). With the weights streaming from memory, as in a model, oneDNN is faster at one row too
# ("The fp32 kernel" in docs/speed.md), and the default fp32 path (attnkit.kernels) takes it for every row.
MKL_MAX_MACS = 2**20


class OneDNNLinear(_Linear):
    """fp32 ``y = x W^T + b`` through oneDNN's single-precision product (``torch.ops.mkldnn._linear_pointwise``,
    the op Inductor's CPU linear lowers to), on the weight as it is stored (no packed copy: measured as fast
    as oneDNN's reordered layout on this CPU). oneDNN is the GEMM backend CTranslate2 selects on non-Intel x86
    CPUs, where PyTorch's ``F.linear`` goes to MKL. The same fp32 arithmetic in another summation order:
    results differ from ``F.linear`` by rounding only (about 1e-7 relative), so this is an opt-in
    (:func:`onednn_fp32`), never the fp32 reference path. Buffers: ``weight`` [out, in], ``bias`` [out] or None."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight.detach().float())  # shared with the fp32 model (tied weights too)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def dequantized(self) -> Tensor:
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() * self.out_features <= MKL_MAX_MACS:  # a small product (one decoding row): MKL is faster
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")



QuantizedLinear = Int8Linear | BF16Linear | OneDNNLinear


class QuantEmbedding(nn.Module):
    """A token embedding whose table is int8 rows with per-row scales (``scale`` [V]) or bf16 rows
    (``scale`` None): ids [...] -> fp32 [..., E]. The padding row stays exactly zero."""

    def __init__(self, table: Tensor, scale: Tensor | None, padding_idx: int | None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = table.shape
        self.padding_idx = padding_idx
        self.register_buffer("table", table)
        self.register_buffer("scale", scale)

    @property
    def weight(self) -> Tensor:
        """The whole table in fp32 (made at each access: for code that reads an embedding's weight)."""
        return self.table.float() if self.scale is None else self.table.float() * self.scale[:, None]

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(ids, self.table).float()  # (..., E)
        return rows if self.scale is None else rows * F.embedding(ids, self.scale[:, None])


# ------------------------------------------------------------------------------- stacked q/k/v
class QuantizedStack:
    """The quantized model's replacement of :class:`StackedProjections`: several quantized projections of
    one input as one product over their stacked weights (rows concatenated: with per-row weight scales and
    per-row activation scales each output column is exactly what its own projection gives). The stacked
    module is made on first use and kept (quantized weights are buffers: no optimizer changes them; loading
    new ones changes their storage, which the key sees)."""

    def __init__(self) -> None:
        self._stacks: dict[tuple[int, ...], tuple[tuple, nn.Module]] = {}

    def __call__(self, x: Tensor, projections: tuple[nn.Module, ...]) -> tuple[Tensor, ...]:
        """x [B, T, E_in] -> one [B, T, out_features] tensor per projection."""
        sizes = [p.out_features for p in projections]
        if not all(isinstance(p, QuantizedLinear) for p in projections) or len(
                {type(p) for p in projections}) != 1 or len({p.bias is None for p in projections}) != 1:
            return tuple(p(x) for p in projections)
        name = tuple(id(p) for p in projections)
        key = tuple(0 if b is None else b.data_ptr() for p in projections for b in p._buffers.values())
        if name not in self._stacks or self._stacks[name][0] != key:
            self._stacks[name] = (key, _stack(projections))
        return self._stacks[name][1](x).split(sizes, dim=-1)

    def cached(self, name: str) -> Tensor | None:
        """StackedProjections' interface: the quantized stack holds modules, not a stacked weight."""
        return None

    def __getstate__(self) -> dict:
        return {"_stacks": {}}  # copies and pickles make their stacks again on first use


def _stack(projections: tuple[nn.Module, ...]) -> nn.Module:
    biases = [p.bias for p in projections]
    bias = None if biases[0] is None else torch.cat(biases)
    if isinstance(projections[0], Int8Linear):
        return Int8Linear.from_parts(torch.cat([p.qweight for p in projections]),
                                     torch.cat([p.scale for p in projections]), bias)
    return type(projections[0])(torch.cat([p.weight for p in projections]), bias)


# ------------------------------------------------------------------------------- whole models
@torch.no_grad()
def quantize(model: nn.Module, dtype: str, *, embeddings: bool = True, values: bool = True) -> nn.Module:
    """Turn ``model``'s linear layers (and, with ``embeddings``, its token embeddings) into ``dtype``
    ("fp32": unchanged; "bf16"; "int8"), in place; returns the model, in eval mode (quantized layers are
    for inference). A tied embedding and output projection keep one shared table. ``values=False`` builds
    the quantized layers with uninitialised tables of the right shapes (for :func:`load_quantized`, which
    then reads every tensor from a file): no rounding pass over the weights."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "fp32":
        return model
    devices = {t.device.type for t in [*model.parameters(), *model.buffers()]}
    if dtype == "int8" and devices - {"cpu"}:
        raise ValueError(f"int8 inference runs on the CPU only; the model is on {sorted(devices)}")
    model.eval()
    shared: dict[int, tuple[Tensor, Tensor | None]] = {}  # id(fp32 weight) -> its low-precision form

    def low(weight: Tensor) -> tuple[Tensor, Tensor | None]:
        if id(weight) not in shared:
            if not values:
                table = torch.empty_like(weight, dtype=torch.int8 if dtype == "int8" else torch.bfloat16)
                scale = torch.empty(weight.shape[0], device=weight.device) if dtype == "int8" else None
                shared[id(weight)] = (table, scale)
            elif dtype == "int8":
                shared[id(weight)] = quantize_rows(weight)
            else:
                shared[id(weight)] = (weight.detach().to(torch.bfloat16), None)
        return shared[id(weight)]

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                table, scale = low(child.weight)
                new = (Int8Linear.from_parts(table, scale, child.bias) if dtype == "int8"
                       else BF16Linear(table, child.bias))
                setattr(parent, name, new)
            elif embeddings and isinstance(child, nn.Embedding) and child.max_norm is None:
                table, scale = low(child.weight)
                setattr(parent, name, QuantEmbedding(table, scale, child.padding_idx))
        if isinstance(getattr(parent, "_stacked", None), StackedProjections):
            parent._stacked = QuantizedStack()  # the fp32 stack reads .weight; see the module docstring
    model._attnkit_quantized = dtype  # what save_quantized records
    return model


@torch.no_grad()
def onednn_fp32(model: nn.Module) -> nn.Module:
    """fp32 inference with every ``nn.Linear`` run by :class:`OneDNNLinear` (in place; eval mode): the
    precision stays fp32, the products go to oneDNN instead of MKL (faster on this project's AMD CPU,
    docs/speed.md). Tied weights stay shared; embeddings are untouched."""
    model.eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, OneDNNLinear(child.weight, child.bias))
        if isinstance(getattr(parent, "_stacked", None), StackedProjections):
            parent._stacked = QuantizedStack()
    return model


def quantized_mode(model: nn.Module) -> str:
    """The mode :func:`quantize` gave ``model`` ("fp32" when it was not quantized)."""
    return getattr(model, "_attnkit_quantized", "fp32")


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and persistent buffers, each storage counted once (tied weights)."""
    seen: dict[tuple, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[(t.untyped_storage().data_ptr(), t.device)] = t.untyped_storage().nbytes()
    return sum(seen.values())


def save_quantized(model: nn.Module, path: str | Path, extra: dict | None = None) -> None:
    """Write a quantized model's tensors to a safetensors file (shared tables stored once), with its mode
    (and the JSON-able ``extra``, e.g. what it was made from) in the metadata, so that a model is quantized
    once and loaded with :func:`load_quantized`."""
    meta = {METADATA_KEY: json.dumps({**(extra or {}), "dtype": quantized_mode(model)})}
    save_model(model, str(path), metadata=meta)


def quantized_metadata(path: str | Path) -> dict:
    """What :func:`save_quantized` recorded in ``path``: {"dtype": mode, **extra}; ValueError for a file
    without it."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path}: not an attnkit quantized model (no {METADATA_KEY!r} metadata)")
    return json.loads(meta[METADATA_KEY])


def load_quantized(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a file written by :func:`save_quantized` into ``model``, an fp32 model of the same shape (its
    weights are irrelevant, e.g. freshly built): its layers become the file's mode (without quantizing the
    weights), then every tensor is read from the file (strict: a missing or unexpected tensor is an
    error). Returns the model."""
    quantize(model, quantized_metadata(path)["dtype"], values=False)
    missing, unexpected = load_model(model, str(path), strict=True)
    if missing or unexpected:  # load_model raises on these with strict=True; kept for clarity
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")
    return model
