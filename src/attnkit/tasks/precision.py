"""The inference precision of an opened run (issue 16): ``open_run(path, dtype=...)`` comes here.

``dtype`` is "fp32" (the default: the model exactly as loaded), "bf16", "int8" or "auto", which
:func:`attnkit.layers.quant.pick_dtype` resolves from the device's features and the run's work: "decode"
for models that translate or generate, "encode" for the others (embeddings, classification). The model is
quantized in place (:func:`attnkit.layers.quant.quantize`) right after its weights are loaded, so every
later ``frozen_weights`` block derives its copies from the quantized layers.

Quantize once: :func:`save_quantized_run` writes ``<dir>/model.<dtype>.safetensors`` (``attnkit quantize
DIR --dtype int8``), and opening the directory with that dtype loads it instead of quantizing again. The
file records a SHA-256 of the fp32 weights it was made from (names, dtypes, shapes and bytes of the
state dict, about 0.3 s per 500 MB here) and the checkpoint step when the run has one; a file made from
other weights (the run trained on, a directory re-downloaded) is a CheckpointError naming it: quantize
again or delete it. Nothing is re-quantized silently, so a deployed file never drifts from its weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit import __version__
from attnkit.errors import CheckpointError, InputError
from attnkit.layers.quant import (
    DTYPES,
    DtypeChoice,
    load_quantized,
    pick_dtype,
    quantize,
    quantized_metadata,
    save_quantized,
)

DTYPE_CHOICES = ("auto", *DTYPES)  # what --dtype accepts
DEFAULT = DtypeChoice("fp32", "fp32: the default")
QUANTIZED_FILE = "model.{dtype}.safetensors"  # beside the run's weights


def quantized_file(path: str | Path, dtype: str) -> Path:
    """Where the quantized weights of the run or Hugging Face directory ``path`` are saved."""
    return Path(path) / QUANTIZED_FILE.format(dtype=dtype)


def work_of(run: Any) -> str:
    """pick_dtype's work of a Run: "decode" when it translates or generates (one token per step), else
    "encode" (whole sentences per product: embeddings, classification)."""
    return "decode" if run.can("translate") or run.can("generate") else "encode"


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def set_precision(run: Any, dtype: str = "fp32", device: str = "cpu") -> Any:
    """Put ``run``'s model on ``device`` in ``dtype`` (see the module docstring); sets ``run.precision``
    (the DtypeChoice: mode and reason) and ``run.quantized_from`` (the saved file loaded, or None).
    InputError for a dtype the device cannot run (int8 off the CPU) or an unknown one."""
    if dtype not in DTYPE_CHOICES:
        raise InputError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    choice = DEFAULT
    if dtype != "fp32":
        try:
            choice = pick_dtype(dtype, device, work=work_of(run))
        except ValueError as exc:  # int8 off the CPU
            raise InputError(str(exc)) from None
    if str(device) != "cpu":
        try:
            run.model.to(device)
        except (RuntimeError, AssertionError) as exc:  # no such device, or torch built without it
            raise InputError(f"device {device!r} is not available ({exc})") from None
    run.precision, run.quantized_from = choice, None
    if choice.dtype == "fp32":
        return run
    saved = quantized_file(run.path, choice.dtype)
    if saved.is_file():
        _load_saved(run.model, saved)
        run.quantized_from = saved
    else:
        quantize(run.model, choice.dtype)
    return run


def _load_saved(model: nn.Module, saved: Path) -> None:
    try:
        meta = quantized_metadata(saved)
    except Exception as exc:  # safetensors' own errors for a truncated file, ours for a foreign one
        raise CheckpointError(f"{saved}: cannot read quantized weights ({exc})") from None
    if meta.get("source_sha256") != weights_fingerprint(model):
        step = f" (step {meta['step']})" if "step" in meta else ""
        raise CheckpointError(f"{saved}: made from other weights{step} than the directory holds now; quantize "
                              f"again (attnkit quantize {saved.parent} --dtype {meta.get('dtype')}) or delete it")
    try:
        load_quantized(model, saved)
    except Exception as exc:
        raise CheckpointError(f"{saved}: cannot load quantized weights ({exc})") from None


def save_quantized_run(run: Any, dtype: str) -> Path:
    """Quantize an fp32 ``run``'s model to ``dtype`` ("int8" or "bf16"), in place, and write it to
    :func:`quantized_file` with the fingerprint of the fp32 weights (and the step); returns the path."""
    if dtype not in ("int8", "bf16"):
        raise InputError(f"dtype must be int8 or bf16, got {dtype!r}")
    if run.precision.dtype != "fp32":
        raise InputError(f"{run.path}: the run is already in {run.precision.dtype}; open it in fp32 to quantize it")
    extra = {"source_sha256": weights_fingerprint(run.model), "attnkit_version": __version__}
    if "step" in run.meta:
        extra["step"] = run.meta["step"]
    quantize(run.model, dtype)
    out = quantized_file(run.path, dtype)
    tmp = out.with_name(out.name + ".tmp")
    save_quantized(run.model, tmp, extra)
    tmp.replace(out)
    run.precision, run.quantized_from = DtypeChoice(dtype, f"{dtype} as requested"), out
    return out
