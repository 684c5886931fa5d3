"""Checkpoints: written atomically, verified on load, never unpickled.

Layout of a run directory::

    run/
      run.json                  family, attnkit version, the family's metadata (model config, ...)
      train_config.json         the TrainConfig of the latest (re)start
      metrics.jsonl             one JSON object per log line / evaluation
      checkpoints/step-00001000/
          model.safetensors     weights (tied weights stored once; ``_orig_mod.``/``module.`` stripped)
          state.pt              optimizer, scheduler, grad scaler, data position, random states
                                (plain tensors and numbers: loaded with ``torch.load(weights_only=True)``)
          meta.json             family, step, the run metadata, sha256 of the two files above

A checkpoint directory is first written as ``checkpoints/.tmp-...`` (each file fsynced), then renamed
into place with ``os.replace`` and the parent directory fsynced, so a crash leaves either the complete
checkpoint or none.  Every problem found while loading raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from torch import nn

from attnkit import __version__
from attnkit.errors import CheckpointError
from attnkit.training import sharding

MODEL_FILE, STATE_FILE, META_FILE, RUN_FILE = "model.safetensors", "state.pt", "meta.json", "run.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


# ----------------------------------------------------------------------------------------- atomic files
def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------- weights
def strip_wrapper_prefixes(state: dict[str, torch.Tensor], *, ddp: bool = True) -> dict[str, torch.Tensor]:
    """Remove ``_orig_mod.`` (torch.compile) at any depth and, if ``ddp``, leading ``module.`` (DDP)."""
    out = {}
    for key, value in state.items():
        parts = [p for p in key.split(".") if p != "_orig_mod"]
        while ddp and len(parts) > 1 and parts[0] == "module":
            parts = parts[1:]
        out[".".join(parts)] = value
    return out


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile / DistributedDataParallel wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def unwrap_ddp(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """The DistributedDataParallel wrapper inside (possibly compiled) ``model``, if any."""
    while isinstance(model, nn.Module):
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model
        model = getattr(model, "_orig_mod", None)
    return None


def weights_to_bytes(model_or_state: nn.Module | dict[str, torch.Tensor]) -> bytes:
    """safetensors bytes of a model's weights; tensors sharing storage (tied weights) are stored once."""
    if isinstance(model_or_state, nn.Module):
        state = strip_wrapper_prefixes(unwrap_model(model_or_state).state_dict(), ddp=False)
    else:
        state = strip_wrapper_prefixes(model_or_state)
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, t in state.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() > 0 and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        unique[key] = t.detach().to("cpu").contiguous()
    return safetensors.torch.save(unique, metadata={"aliases": json.dumps(aliases), "format": "pt"})


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (aliases of tied weights restored), or CheckpointError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read weights file ({exc.strerror})") from None
    return _weights_from_bytes(data, path)


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``model.load_state_dict`` after checking that names and shapes match; else CheckpointError."""
    target = unwrap_model(model)
    expected = target.state_dict()
    state = strip_wrapper_prefixes(state, ddp=False)
    if set(state) != set(expected):  # maybe saved from a DDP wrapper by another tool
        without_ddp = strip_wrapper_prefixes(state)
        state = without_ddp if set(without_ddp) == set(expected) else state
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("shape mismatch", wrong), ("missing", missing), ("unexpected", unexpected)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{source}: weights do not match the model configuration; " + "; ".join(parts))
    if sharding.is_sharded(target):  # consolidated weights into a sharded model: each process keeps its shard
        sharding.load_full_model_state(target, state)
    else:
        target.load_state_dict(state, strict=True)


# -------------------------------------------------------------------------------------- random states
def capture_rng_state() -> dict:
    """Python, numpy, torch CPU and every CUDA device's generator states, as weights-only-loadable data."""
    version, py_state, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {
            "kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------- checkpoints
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run (those with a meta.json), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / META_FILE).is_file()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: str | Path, step: int, model: nn.Module | dict[str, torch.Tensor], state: dict, meta: dict,
    keep_last: int,
) -> Path:
    """Write ``checkpoints/step-N`` atomically, then delete all but the newest ``keep_last``. ``model``: the
    module, or its (consolidated) state dict."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{final.name}-"))
    try:
        weights = weights_to_bytes(model if isinstance(model, dict) else unwrap_model(model))
        buf = io.BytesIO()
        torch.save(state, buf)
        blob = buf.getvalue()
        _write_synced(tmp / MODEL_FILE, weights)
        _write_synced(tmp / STATE_FILE, blob)
        full_meta = {**meta, "step": step, "attnkit_version": __version__,
                     "sha256": {MODEL_FILE: sha256(weights), STATE_FILE: sha256(blob)}}
        _write_synced(tmp / META_FILE, (json.dumps(full_meta, indent=2) + "\n").encode())
        fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. resumed and stopped at once)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run directory (its latest checkpoint) or a checkpoint directory."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint directory")
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path}: no checkpoint found (expected {path}/checkpoints/step-*/{META_FILE})")
    return latest


def read_meta_file(path: str | Path) -> dict:
    """A JSON object from ``path`` (meta.json, run.json), or CheckpointError naming the file."""
    try:
        meta = json.loads(Path(path).read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable metadata ({exc})") from None
    return meta


def read_meta(path: str | Path, family: str | None = None) -> dict:
    """meta.json of a checkpoint (``path``: run or checkpoint dir), checking its model ``family``."""
    ckpt = resolve_checkpoint(path)
    meta = read_meta_file(ckpt / META_FILE)
    meta["checkpoint_dir"] = str(ckpt)
    if family is not None and meta.get("family") != family:
        raise CheckpointError(
            f"{ckpt}: checkpoint of a {meta.get('family')!r} model, but a {family!r} model was expected"
        )
    return meta


def _verified_bytes(ckpt: Path, name: str, meta: dict) -> bytes:
    path = ckpt / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint file ({exc.strerror})") from None
    expected = meta.get("sha256", {}).get(name)
    if expected is not None and sha256(data) != expected:
        raise CheckpointError(f"{path}: checksum mismatch, the file is truncated or corrupt")
    return data


def load_model_weights(model: nn.Module, path: str | Path, family: str | None = None) -> dict:
    """Load a checkpoint's weights into ``model`` (checked: family, checksum, names, shapes); returns meta."""
    meta = read_meta(path, family)
    ckpt = Path(meta["checkpoint_dir"])
    data = _verified_bytes(ckpt, MODEL_FILE, meta)
    tmp_state = _weights_from_bytes(data, ckpt / MODEL_FILE)
    load_weights_into(model, tmp_state, ckpt / MODEL_FILE)
    return meta


def _weights_from_bytes(data: bytes, source: Path) -> dict[str, torch.Tensor]:
    try:
        state = safetensors.torch.load(data)
        header_len = int.from_bytes(data[:8], "little")
        aliases = json.loads((json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}).get("aliases", "{}"))
    except Exception as exc:
        raise CheckpointError(f"{source}: cannot read weights, file truncated or corrupt ({exc})") from None
    for alias, src in aliases.items():
        state[alias] = state[src]
    return state


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """state.pt of a checkpoint, through ``torch.load(weights_only=True)``; CheckpointError if bad."""
    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    data = _verified_bytes(ckpt, STATE_FILE, meta)
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{ckpt / STATE_FILE}: cannot read training state ({exc})") from None
