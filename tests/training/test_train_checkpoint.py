"""Checkpoint files: atomic layout, keep-last-K, verification errors, tied weights, compile prefixes."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from _training_toy import ToyModel
from torch import nn

from attnkit.errors import CheckpointError
from attnkit.training import checkpoint as ck


def _save(run, step: int, model: nn.Module, keep: int = 3, family: str = "toy"):
    state = {"step": step, "optimizer": torch.optim.Adam(model.parameters()).state_dict()}
    return ck.save_checkpoint(run, step, model, state, {"family": family, "model_config": {"dim": 16}}, keep)


def test_keep_last_k_and_no_temporary_left(tmp_path) -> None:
    model = ToyModel()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step-00000001-crashed").mkdir()  # left by a crash mid-save
    for step in range(1, 6):
        _save(tmp_path, step, model, keep=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-00000004", "step-00000005"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]
    assert ck.latest_checkpoint(tmp_path).name == "step-00000005"


def test_incomplete_checkpoint_dir_is_ignored(tmp_path) -> None:
    _save(tmp_path, 1, ToyModel())
    (tmp_path / "checkpoints" / "step-00000002").mkdir()  # no meta.json: never completed
    assert ck.latest_checkpoint(tmp_path).name == "step-00000001"


def test_weights_round_trip_and_training_state_is_weights_only(tmp_path) -> None:
    a, b = ToyModel(), ToyModel()
    path = _save(tmp_path, 3, a)
    meta = ck.load_model_weights(b, tmp_path, family="toy")
    assert meta["step"] == 3 and meta["model_config"] == {"dim": 16}
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    state = ck.load_training_state(path)
    assert state["step"] == 3


def test_truncated_weights_name_the_file(tmp_path) -> None:
    path = _save(tmp_path, 1, ToyModel())
    f = path / ck.MODEL_FILE
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=str(f)):
        ck.load_model_weights(ToyModel(), tmp_path)


def test_corrupt_byte_in_weights_is_detected(tmp_path) -> None:
    path = _save(tmp_path, 1, ToyModel())
    f = path / ck.MODEL_FILE
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF  # inside a tensor: safetensors itself cannot notice
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        ck.load_model_weights(ToyModel(), path)


def test_garbage_weights_without_checksum_still_give_checkpoint_error(tmp_path) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=str(f)):
        ck.read_weights(f)


def test_corrupt_state_and_meta_name_the_file(tmp_path) -> None:
    path = _save(tmp_path, 1, ToyModel())
    (path / ck.META_FILE).write_text("{trunc")
    with pytest.raises(CheckpointError, match=str(path / ck.META_FILE)):
        ck.read_meta(path)
    path = _save(tmp_path, 2, ToyModel())
    (path / ck.STATE_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=str(path / ck.STATE_FILE)):
        ck.load_training_state(path)


def test_pickled_code_in_state_is_refused(tmp_path) -> None:
    path = _save(tmp_path, 1, ToyModel())
    buf = io.BytesIO()
    torch.save({"evil": random.Random}, buf)  # a class: not allowed by weights_only
    (path / ck.STATE_FILE).write_bytes(buf.getvalue())
    meta = ck.read_meta(path)
    meta["sha256"].pop(ck.STATE_FILE)
    ck.atomic_write_json(path / ck.META_FILE, meta)
    with pytest.raises(CheckpointError, match="cannot read training state"):
        ck.load_training_state(path)


def test_wrong_family_and_wrong_config(tmp_path) -> None:
    _save(tmp_path, 1, ToyModel(dim=16), family="gpt")
    with pytest.raises(CheckpointError, match="'gpt' model, but a 'bert' model"):
        ck.load_model_weights(ToyModel(), tmp_path, family="bert")
    with pytest.raises(CheckpointError, match=r"emb.weight: file \(13, 16\) vs model \(13, 8\)"):
        ck.load_model_weights(ToyModel(dim=8), tmp_path, family="gpt")
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        ck.load_model_weights(ToyModel(), tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="no such run"):
        ck.read_meta(tmp_path / "nope")


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.emb.weight


def test_tied_weights_saved_once_and_restored(tmp_path) -> None:
    a, b = Tied(), Tied()
    f = tmp_path / "t.safetensors"
    f.write_bytes(ck.weights_to_bytes(a))
    state = ck.read_weights(f)
    assert torch.equal(state["head.weight"], a.emb.weight.detach())
    ck.load_weights_into(b, state, f)
    assert b.head.weight is b.emb.weight and torch.equal(b.emb.weight, a.emb.weight)


def test_compiled_and_plain_checkpoints_interchange(tmp_path) -> None:
    plain = ToyModel()
    compiled = torch.compile(ToyModel())  # compilation is lazy: state_dict keys carry _orig_mod.
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    f = tmp_path / "c.safetensors"
    f.write_bytes(ck.weights_to_bytes(compiled))
    assert not any("_orig_mod" in k for k in ck.read_weights(f))
    ck.load_weights_into(plain, ck.read_weights(f), f)
    assert torch.equal(plain.out.weight, compiled._orig_mod.out.weight)
    other = torch.compile(ToyModel())
    ck.load_weights_into(other, {"_orig_mod." + k: v for k, v in plain.state_dict().items()}, f)
    assert torch.equal(other._orig_mod.emb.weight, plain.emb.weight)
    nested = {"encoder._orig_mod.layer.weight": 1, "module._orig_mod.x": 2, "_orig_mod.module.z": 3,
              "inner.module.y": 4, "module_list.w": 5}
    assert ck.strip_wrapper_prefixes(nested) == {"encoder.layer.weight": 1, "x": 2, "z": 3, "inner.module.y": 4,
                                                 "module_list.w": 5}
    ddp_state = {"module." + k: v for k, v in plain.state_dict().items()}
    ck.load_weights_into(other, ddp_state, f)


def test_a_submodule_named_module_is_not_mistaken_for_a_wrapper(tmp_path) -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = ToyModel()

    a, b = Holder(), Holder()
    f = tmp_path / "h.safetensors"
    f.write_bytes(ck.weights_to_bytes(a))
    assert "module.emb.weight" in ck.read_weights(f)
    ck.load_weights_into(b, ck.read_weights(f), f)
    assert ck.unwrap_model(b) is b and torch.equal(b.module.emb.weight, a.module.emb.weight)


def test_rng_state_round_trip() -> None:
    state = ck.capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    ck.restore_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_atomic_write_replaces_whole_file(tmp_path) -> None:
    f = tmp_path / "x.json"
    ck.atomic_write_json(f, {"a": 1})
    ck.atomic_write_json(f, {"a": 2})
    assert f.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":2}'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
