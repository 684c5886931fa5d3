"""Bounded resources (issue 15): every size-like option is checked before the work that it sizes.

Two kinds of limit, one helper each:

* **What the model allows** (:func:`at_least`, :func:`finite`, :func:`in_range`, :func:`threads`): a
  value outside the range is a one-line :class:`~attnkit.errors.InputError` naming the option, or a
  documented clamp with a warning (``--threads`` beyond the CPU count).
* **What the machine has** (:func:`check_memory`): an estimate of the bytes the work needs, from the
  model's configuration (:func:`shape_of`: layers, heads, widths, vocabulary), against
  :func:`available_memory` (the smaller of the memory available, the address-space and data limits set
  with ``ulimit`` / ``setrlimit`` and a cgroup limit; the GPU's free memory for a CUDA device). One
  estimate per kind of work, shared by every family: :func:`decoding_bytes` (KV caches of greedy
  decoding, sampling and beam search), :func:`forward_bytes` (an inference forward pass: embeddings,
  classification, perplexity), :func:`training_bytes` (weights, gradients, AdamW state and the
  activations kept for the backward pass).

Errors name the option as the caller knows it: a Python caller gets ``beam_size``, the CLI ``--beam``
(it wraps the call in :func:`option_names`)::

    attnkit: error: --beam 100000 would need about 24.1 GB for its decoder caches; this machine has
    20.3 GB available (lower --beam or --batch-tokens)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import resource
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import torch

from attnkit.errors import InputError

# The work may use this share of what is available: the estimates leave out Python objects, allocator
# slack and the copies a reorder makes for a moment.
USABLE_SHARE = 0.75
F = TypeVar("F", bound=Callable[..., Any])
_NO_NAMES: Mapping[str, str] = MappingProxyType({})
_NAMES: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("attnkit_option_names", default=_NO_NAMES)


# ------------------------------------------------------------------------------------------ option names
@contextlib.contextmanager
def option_names(names: Mapping[str, str]) -> Iterator[None]:
    """Within the block, errors name the options as ``names`` maps them (``{"beam_size": "--beam"}``)."""
    token = _NAMES.set({**_NAMES.get(), **names})
    try:
        yield
    finally:
        _NAMES.reset(token)


def with_option_names(names: Mapping[str, str]) -> Callable[[F], F]:
    """Decorator: the function runs within :func:`option_names` ``(names)`` (a CLI command's flags)."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with option_names(names):
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap


def name(key: str) -> str:
    """The name of option ``key`` for the user (the CLI flag within :func:`option_names`, else ``key``)."""
    return _NAMES.get().get(key, key)


# ------------------------------------------------------------------------------ what the model allows
def at_least(key: str, value: int | float, minimum: int | float) -> None:
    """InputError ``KEY must be >= MINIMUM, got VALUE`` unless ``value >= minimum`` (NaN fails)."""
    if not value >= minimum:
        raise InputError(f"{name(key)} must be >= {minimum}, got {value}")


def in_range(key: str, value: int | float, low: int | float, high: int | float, why: str = "") -> None:
    """InputError unless ``low <= value <= high``; ``why`` says where the bound comes from."""
    if not low <= value <= high:
        raise InputError(f"{name(key)} must be in [{low}, {high}]{' (' + why + ')' if why else ''}, got {value}")


def finite(key: str, value: float | None, rule: str = "a finite number") -> None:
    """InputError ``KEY must be RULE, got VALUE`` for NaN or +-inf (None passes: the option is unset)."""
    if value is not None and not math.isfinite(value):
        raise InputError(f"{name(key)} must be {rule}, got {value}")


def fits_64_bits(key: str, value: int | None) -> None:
    """Seeds go to torch and numpy as 64-bit integers."""
    if value is not None and not -(2**63) <= value < 2**63:
        raise InputError(f"{name(key)} must fit in 64 bits, got {value}")


def threads(key: str, value: int | None) -> int | None:
    """The CPU thread count to use for ``value``: None or 0 = torch's default; more than the CPUs of this
    machine is clamped to them with a warning (each thread costs memory and a share of the same cores)."""
    if not value:
        return None
    at_least(key, value, 0)
    cpus = os.cpu_count() or 1
    if value > cpus:
        warn(f"{name(key)} {value} is more than the {cpus} CPU(s) of this machine; using {cpus}")
        return cpus
    return value


def warn(message: str) -> None:
    """One warning line on stderr (the CLI's format; clamps are warnings, not errors)."""
    print(f"attnkit: warning: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------ what the machine has
@dataclass(frozen=True)
class Memory:
    """Bytes the process may still allocate, and what sets the bound (for the message)."""

    bytes: int
    source: str  # e.g. "this machine has {} available"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _status_bytes(field: str) -> int:
    """``VmSize`` / ``VmData`` of this process (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _rlimit_left(limit: int, field: str) -> int | None:
    soft, _ = resource.getrlimit(limit)
    return None if soft == resource.RLIM_INFINITY else max(soft - _status_bytes(field), 0)


def _cgroup_left() -> int | None:
    for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # v1
        try:
            text = (Path("/sys/fs/cgroup") / limit_file).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                continue
            return max(int(text) - int((Path("/sys/fs/cgroup") / usage_file).read_text()), 0)
        except (OSError, ValueError):
            continue
    return None


def available_memory(device: torch.device | str | None = None) -> Memory | None:
    """What this process may still allocate on ``device`` (CPU: the least of MemAvailable, the
    RLIMIT_AS / RLIMIT_DATA limits minus what is mapped already, and a cgroup limit; CUDA: the GPU's free
    memory). None when nothing can be measured (then no memory check is made)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return Memory(free, "the GPU has {} free")
    bounds = [(_meminfo_available(), "this machine has {} available"),
              (_rlimit_left(resource.RLIMIT_AS, "VmSize"), "the address-space limit (ulimit -v) leaves {}"),
              (_rlimit_left(resource.RLIMIT_DATA, "VmData"), "the data-size limit (ulimit -d) leaves {}"),
              (_cgroup_left(), "the memory limit of this container leaves {}")]
    known = [(b, s) for b, s in bounds if b is not None]
    if not known:
        return None
    return Memory(*min(known, key=lambda bs: bs[0]))


def human_bytes(n: float) -> str:
    """1234567890 -> '1.2 GB' (decimal units, as ``free -h`` and disk vendors count)."""
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


@dataclass(frozen=True)
class Option:
    """An option that sizes the work: its key (see :func:`name`), value and usual value (its default);
    the error names the option furthest above its usual value."""

    key: str
    value: Any
    usual: float = 1


def check_memory(need: float, what: str, options: Sequence[Option], device: torch.device | str | None = None,
                 available: Memory | None = None) -> None:
    """InputError when ``need`` bytes (for ``what``: "its decoder caches", ...) exceed the usable share of
    the memory available; the message names the option most responsible, its value, the estimate, the
    limit and the options that would lower it."""
    have = available if available is not None else available_memory(device)
    if have is None or need <= USABLE_SHARE * have.bytes:
        return
    blamed = max(options, key=lambda o: float(o.value) / max(o.usual, 1e-9))
    lower = " or ".join(name(o.key) for o in options)
    raise InputError(f"{name(blamed.key)} {blamed.value} would need about {human_bytes(need)} for {what}; "
                     f"{have.source.format(human_bytes(have.bytes))} (lower {lower})")


# --------------------------------------------------------------------------------- sizes of the work
@dataclass(frozen=True)
class Shape:
    """The sizes of a model that its memory use depends on (names of the spec's shape legend).

    decoder_layers: layers that keep a KV cache when decoding (GPT: all; encoder-decoder: the decoder's);
    kv_width: width of the keys (= values) cached per layer and position (H_kv * Dh; d_model without
    grouped-query attention); cache_len: positions a KV cache holds at most (max_len, or twice a sliding
    window); cross: the decoder attends to an encoder output (its keys and values are cached too)."""

    d_model: int  # E
    n_heads: int  # H
    kv_width: int
    d_ff: int
    vocab: int  # V, of the output side
    encoder_layers: int
    decoder_layers: int
    cross: bool
    max_len: int
    cache_len: int
    parameters: int
    dtype_bytes: int = 4


def _get(config: Any, *names: str, default: int = 0) -> int:
    for n in names:
        value = getattr(config, n, None)
        if value is not None:
            return int(value)
    return default


def shape_of(config: Any, parameters: int | None = None, dtype_bytes: int = 4) -> Shape:
    """The :class:`Shape` of any family's config, read through the names the configs share (``d_model``
    / ``d_hidden``, ``n_heads``, ``n_kv_heads``, ``d_ff``, ``n_layers`` or ``n_encoder_layers`` +
    ``n_decoder_layers``, ``vocab_size`` / ``tgt_vocab_size``, ``max_len``, ``window``), so a new family
    that uses them gets estimates for free. ``parameters``: the model's count when it exists, else
    estimated from the sizes (:func:`parameters_of`)."""
    e = _get(config, "d_model", "d_hidden", default=1)
    h = max(_get(config, "n_heads", default=1), 1)
    attention = hasattr(config, "n_heads")  # an RNN keeps a state, not a cache of keys and values
    seq2seq = hasattr(config, "tgt_vocab_size")  # the decoder reads an encoder output
    encoder_only = hasattr(config, "type_vocab_size")  # BERT: segment embeddings, nothing decodes
    layers = _get(config, "n_layers", default=1)
    enc = _get(config, "n_encoder_layers", default=layers if encoder_only or not attention else 0)
    dec = 0 if encoder_only or not attention else _get(config, "n_decoder_layers", default=layers)
    max_len, window = _get(config, "max_len", default=512), _get(config, "window", default=0)
    vocab = _get(config, "tgt_vocab_size", "vocab_size", default=1)
    shape = Shape(d_model=e, n_heads=h, kv_width=e * _get(config, "n_kv_heads", default=h) // h,
                  d_ff=_get(config, "d_ff", default=4 * e), vocab=vocab, encoder_layers=enc,
                  decoder_layers=dec, cross=seq2seq, max_len=max_len,
                  cache_len=min(max_len, 2 * window) if window else max_len, parameters=0, dtype_bytes=dtype_bytes)
    count = parameters if parameters is not None else parameters_of(shape, config)
    return replace(shape, parameters=count)


def parameters_of(shape: Shape, config: Any = None) -> int:
    """Parameters of a Transformer-style model of ``shape`` (embeddings, positions, per layer the four
    attention projections and the feed-forward block; cross-attention adds four more): the count before
    the model exists, so that a check can run before its allocation."""
    e, f = shape.d_model, shape.d_ff
    layer = 4 * e * e + 2 * e * f + 9 * e
    src_vocab = _get(config, "src_vocab_size", default=0) if config is not None else 0
    shared = bool(getattr(config, "share_embeddings", False))
    embed = (shape.vocab + (0 if shared else src_vocab)) * e + shape.max_len * e
    cross = 4 * e * e * shape.decoder_layers if shape.cross else 0
    return embed + layer * (shape.encoder_layers + shape.decoder_layers) + cross


def decoding_bytes(shape: Shape, rows: int, cache_len: int, source_len: int = 0, beams: int = 1) -> int:
    """Incremental decoding of ``rows`` rows (sentences x ``beams``, or samples): the self-attention KV
    caches of ``cache_len`` positions, the cross-attention keys/values and encoder output of ``source_len``
    positions, one step's activations and logits (with their float copy, softmax and the candidates of
    beam search), the token history, one layer's caches copied again by a reorder, and beam search's
    [sentences, K, K] masks that place each hypothesis in its parent's row (quadratic in the beam)."""
    b = shape.dtype_bytes
    kv = 2 * rows * cache_len * shape.kv_width * b
    cross = 2 * rows * source_len * shape.kv_width * b if shape.cross else 0
    memory = rows * source_len * shape.d_model * b
    step = rows * (8 * shape.d_model + shape.d_ff + 2 * shape.n_heads * (cache_len + source_len)) * b
    logits = 8 * rows * shape.vocab * 4
    history = 2 * rows * cache_len * 8
    slots = (3 * max(rows // beams, 1) + 1) * beams * beams if beams > 1 else 0
    layers = max(shape.decoder_layers, 1)
    return layers * (kv + cross) + (kv + cross) + memory + step + logits + history + slots


def forward_bytes(shape: Shape, rows: int, length: int, logit_positions: int = 0) -> int:
    """One inference forward pass over [rows, length] (no gradients: one layer's activations live at a
    time, twice for the residual stream), the attention weights of a layer [rows, H, length, length] and
    the logits of ``logit_positions`` positions (three copies: logits, float, log-softmax)."""
    b = shape.dtype_bytes
    tokens = rows * length
    layer = tokens * (8 * shape.d_model + 2 * shape.d_ff) * b + 2 * rows * shape.n_heads * length * length * b
    return 2 * layer + 3 * logit_positions * shape.vocab * 4 + tokens * 8 * 4


def training_bytes(shape: Shape, rows: int, length: int, logit_positions: int | None = None,
                   micro_batches: int = 1) -> int:
    """One training step on micro-batches of [rows, length]: weights, gradients and AdamW's two moments
    (16 bytes a parameter), the activations every layer keeps for the backward pass (projections,
    feed-forward, attention weights and their dropout), the logits of ``logit_positions`` positions (all by
    default) with their gradient, and the ``micro_batches`` batches of one update held at once."""
    b = shape.dtype_bytes
    tokens = rows * length
    per_layer = tokens * (16 * shape.d_model + 3 * shape.d_ff) * b + 3 * rows * shape.n_heads * length * length * b
    layers = max(shape.encoder_layers + shape.decoder_layers, 1)
    logits = 4 * (tokens if logit_positions is None else logit_positions) * shape.vocab * 4
    return 16 * shape.parameters + layers * per_layer + logits + 4 * micro_batches * tokens * 8


def token_buffer_bytes(rows: int, tokens: int) -> int:
    """Generated tokens kept as Python lists and then text: about 48 bytes a token (a list slot, an int
    object, a few characters)."""
    return 48 * rows * tokens


# ------------------------------------------------------------------------------------ training checks
def training_device(device: str | None) -> torch.device | None:
    """The device a training ``--device`` names ("auto": CUDA when there is one); None for a name the
    training set-up will reject with its own message."""
    try:
        if device in (None, "auto"):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(device)
    except (RuntimeError, ValueError):
        return None


def check_training(config: Any, rows: int, length: int, options: Sequence[Option], *, grad_accum: int = 1,
                   logit_positions: int | None = None, eval_bytes: int = 0, device: str | None = None) -> None:
    """InputError before the model is built when training it on micro-batches of [rows, length] (with
    ``grad_accum`` of them held for one update, and ``eval_bytes`` for the evaluation) would not fit in
    memory; ``options``: the flags that size it (model sizes, batch sizes), as for :func:`check_memory`."""
    shape = shape_of(config)
    need = training_bytes(shape, rows, length, logit_positions, micro_batches=grad_accum) + eval_bytes
    where = training_device(device)
    if where is not None:
        check_memory(need, "the model's weights, optimizer state and activations",
                     [*options, Option("grad_accum", grad_accum)], device=where)


# Trainers of the tokenizers library reserve memory for the vocabulary they are asked for (about 100
# bytes an entry, measured); they abort the process when that fails, so it is checked first.
TRAINER_BYTES_PER_ENTRY = 128


def vocab_for_training(key: str, vocab_size: int, texts: Sequence[str], minimum: int = 1) -> int:
    """The vocabulary size to ask a tokenizer trainer for: ``vocab_size`` (at least ``minimum``), clamped
    to what the text can give (specials, the 256 bytes, its characters and one merge per character at
    most: a larger request trains the same tokenizer), checked against the memory the trainer reserves."""
    at_least(key, vocab_size, minimum)
    useful = 300 + 3 * sum(len(t) for t in texts)
    size = min(vocab_size, useful)
    check_memory(TRAINER_BYTES_PER_ENTRY * size, "the tokenizer trainer", [Option(key, vocab_size, 8000)])
    return size
