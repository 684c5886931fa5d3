"""Reading and writing Hugging Face model directories safely (safetensors or weights-only pickles)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from attnkit.errors import CheckpointError


def read_config(path: str | Path) -> dict:
    """The ``config.json`` of a Hugging Face model directory, with a clear error when missing or bad."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a model directory")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{cfg}: missing (a Hugging Face model directory needs config.json)")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg}: not valid JSON ({exc})") from None


def read_sharded(path: Path, index: Path) -> dict[str, Tensor]:
    """The weights listed in a ``model.safetensors.index.json`` (``weight_map``: name -> shard file)."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
    out: dict[str, Tensor] = {}
    for shard in shards:
        file = path / shard
        if not file.is_file():
            raise CheckpointError(f"{index}: its shard {shard} is missing")
        try:
            out.update(load_file(str(file)))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{file}: cannot read the weights ({exc})") from None
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{index}: weights {missing[:3]} are in none of the shards")
    return out


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The weights of a Hugging Face model directory: model.safetensors, else the shards of
    model.safetensors.index.json, else pytorch_model.bin (loaded with ``weights_only=True``: no code from
    the file runs)."""
    path = Path(path)
    st, binf = path / "model.safetensors", path / "pytorch_model.bin"
    index = path / "model.safetensors.index.json"
    if not st.is_file() and index.is_file():
        return read_sharded(path, index)
    try:
        if st.is_file():
            return load_file(str(st))
        if binf.is_file():
            return torch.load(binf, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as exc:
        bad = st if st.is_file() else binf
        raise CheckpointError(f"{bad}: cannot read the weights ({exc})") from None
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")


def write_model_dir(path: str | Path, config: dict, state_dict: dict[str, Tensor]) -> None:
    """Write config.json and model.safetensors (tensors made contiguous and unshared)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, str(path / "model.safetensors"))
