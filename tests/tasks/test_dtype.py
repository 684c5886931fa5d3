"""``open_run(path, dtype=...)`` (issue 16) on a dates demo model trained here in seconds (the "test" size of
tasks/demo.py: 95% held-out exact match): int8 and bf16 keep the exact match within 0.5 points of fp32;
``auto`` picks a mode the (faked) hardware has; quantized weights saved by ``save_quantized_run`` load to
the very tensors quantizing again gives, and a stale or corrupt file is a one-line error naming it; the
fp32 default is the model as loaded; the translate commands' ``--dtype`` stays close to fp32."""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from _runs import run_cli  # noqa: E402  (tests/cli/_runs.py)

from attnkit.errors import CheckpointError, InputError  # noqa: E402
from attnkit.layers import quant  # noqa: E402
from attnkit.layers.quant import BF16Linear, Capabilities, Int8Linear, quantize  # noqa: E402
from attnkit.models import BERT, BERTConfig  # noqa: E402
from attnkit.tasks.demo import dates_demo  # noqa: E402
from attnkit.tasks.embed import Embedder  # noqa: E402
from attnkit.tasks.precision import quantized_file, save_quantized_run, set_precision  # noqa: E402
from attnkit.tasks.runs import Run, open_run  # noqa: E402
from attnkit.tasks.translation import finalize_weights  # noqa: E402
from attnkit.training import train  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """A trained dates run (250 steps, about 10 s) and its 1,000 held-out dates (sources, references)."""
    out = tmp_path_factory.mktemp("dtype") / "demo"
    torch.manual_seed(0)
    d = dates_demo(3000, 1000, 250, 120.0, 0, quiet=True, size="test")
    train(d.task, d.model, d.train_config, out)
    d.translator(out)  # writes model.safetensors
    return out, d.test.src, d.test.tgt


def _exact(hyps: list[str], refs: list[str]) -> float:
    return 100.0 * sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs)


def _fake(monkeypatch: pytest.MonkeyPatch, **caps: bool) -> None:
    monkeypatch.setattr(quant, "capabilities", lambda device="cpu": Capabilities("cpu", names=("fake",), **caps))


def _modes(model: nn.Module) -> set[str]:
    """The precision of every linear layer of ``model`` (FastLinear, an nn.Linear, counts as fp32)."""
    kinds = {Int8Linear: "int8", BF16Linear: "bf16", nn.Linear: "fp32"}
    return {next(name for cls, name in kinds.items() if isinstance(m, cls)) for m in model.modules()
            if isinstance(m, tuple(kinds))}


@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_quantized_demo_keeps_its_exact_match(demo, dtype: str) -> None:
    path, src, ref = demo
    fp32 = open_run(path).translate(src)
    run = open_run(path, dtype=dtype)
    assert run.precision.dtype == dtype and _modes(run.model) == {dtype}
    got = run.translate(src)
    base = _exact(fp32, ref)
    assert base >= 80.0, f"the test model trained badly ({base:.1f}%): the comparison would say nothing"
    assert abs(_exact(got, ref) - base) <= 0.5, f"{dtype}: {_exact(got, ref):.1f}% vs fp32 {base:.1f}%"
    assert sum(a == b for a, b in zip(got, fp32, strict=True)) >= 0.98 * len(src)


@pytest.mark.parametrize(("bf16", "int8", "decode", "encode"), [
    (False, False, "fp32", "fp32"), (True, False, "bf16", "bf16"), (False, True, "int8", "fp32"),
    (True, True, "int8", "bf16")])
def test_auto_picks_a_mode_the_faked_hardware_has(demo, monkeypatch, bf16: bool, int8: bool, decode: str,
                                                  encode: str) -> None:
    _fake(monkeypatch, bf16=bf16, int8=int8)
    run = open_run(demo[0], dtype="auto")  # translation: "decode" work
    assert run.precision.dtype == decode and run.precision.reason.startswith("auto")
    assert _modes(run.model) == {decode}
    bert = BERT(BERTConfig.tiny()).eval()
    enc = set_precision(Run("bert", demo[0], bert, None, Embedder(bert, None)), "auto")  # embeddings: "encode"
    assert enc.precision.dtype == encode and _modes(bert) == {encode}


def test_auto_on_this_machine_picks_what_it_has(demo) -> None:
    caps = quant.capabilities()
    got = open_run(demo[0], dtype="auto").precision.dtype
    assert got == ("int8" if caps.int8 else "bf16" if caps.bf16 else "fp32")


def test_fp32_default_is_the_model_as_loaded(demo, monkeypatch) -> None:
    path = demo[0]
    a, b = open_run(path), open_run(path, dtype="fp32")
    assert a.precision.dtype == b.precision.dtype == "fp32" and a.quantized_from is None
    assert _modes(a.model) == _modes(b.model) == {"fp32"}
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    _fake(monkeypatch, bf16=False, int8=False)
    c = open_run(path, dtype="auto")  # nothing native: the fp32 model, untouched
    assert _modes(c.model) == {"fp32"} and c.translate(demo[1][:50]) == a.translate(demo[1][:50])


@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_saved_quantized_weights_load_to_what_quantizing_again_gives(demo, tmp_path, dtype: str) -> None:
    path = tmp_path / "run"
    shutil.copytree(demo[0], path)
    saved = save_quantized_run(open_run(path), dtype)
    assert saved == quantized_file(path, dtype) and saved.is_file()
    loaded = open_run(path, dtype=dtype)
    again = open_run(path)
    quantize(again.model, dtype)
    assert loaded.quantized_from == saved and loaded.precision.dtype == dtype
    sl, sa = loaded.model.state_dict(), again.model.state_dict()
    assert sl.keys() == sa.keys() and all(torch.equal(sl[k], sa[k]) and sl[k].dtype == sa[k].dtype for k in sl)
    src = demo[1][:200]
    assert loaded.translate(src, beam_size=3) == again.translate(src, beam_size=3)


def test_stale_or_corrupt_saved_file_is_an_error_naming_it(demo, tmp_path) -> None:
    path = tmp_path / "run"
    shutil.copytree(demo[0], path)
    run = open_run(path)
    saved = save_quantized_run(copy.deepcopy(run), "int8")
    with torch.no_grad():  # the run's weights change (trained on): the saved file is stale
        next(run.model.parameters()).add_(0.01)
    finalize_weights(path, run.model)
    with pytest.raises(CheckpointError, match=f"{saved}: made from other weights.*attnkit quantize"):
        open_run(path, dtype="int8")
    assert open_run(path, dtype="bf16").quantized_from is None  # another mode's file is not this one
    saved.write_bytes(saved.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{saved}: cannot read quantized weights"):
        open_run(path, dtype="int8")


def test_bad_dtype_and_int8_off_the_cpu_are_input_errors(demo) -> None:
    with pytest.raises(InputError, match="dtype must be one of auto, fp32, bf16, int8"):
        open_run(demo[0], dtype="fp16")
    with pytest.raises(InputError, match="int8 inference runs on the CPU only, not on cuda"):
        open_run(demo[0], dtype="int8", device="cuda")  # refused before the model is moved


@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_translate_commands_dtype_close_to_fp32(demo, tmp_path, dtype: str) -> None:
    path, src, ref = demo
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.words").write_text("".join(s + "\n" for s in src[:200]))
    (data / "test.iso").write_text("".join(s + "\n" for s in ref[:200]))
    stdin = "".join(s + "\n" for s in src[:100]).encode()
    outs, bleu = {}, {}
    for mode in ("fp32", dtype):
        code, out, err = run_cli(["translate", "run", str(path), "--dtype", mode, "--quiet"], stdin)
        assert code == 0 and err == "", err
        outs[mode] = out.decode().splitlines()
        code, out, err = run_cli(["translate", "eval", str(path), "--data", str(data), "--split", "test", "--beam",
                                  "1", "--dtype", mode])
        assert code == 0, err
        bleu[mode] = float(out.decode().split("BLEU ")[1].split()[0])
    assert len(outs[dtype]) == 100 and sum(a == b for a, b in zip(outs["fp32"], outs[dtype], strict=True)) >= 97
    assert abs(bleu[dtype] - bleu["fp32"]) <= 1.0, bleu
