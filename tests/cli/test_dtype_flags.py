"""``--dtype auto|fp32|bf16|int8`` on every command that runs a model (issue 16), on the tiny runs of
tests/cli/_runs.py and the real all-MiniLM-L6-v2: each quantized output stays close to fp32's (the
translation commands on a trained model: tests/tasks/test_dtype.py), ``--dtype fp32`` prints what no flag
prints, byte for byte, ``auto`` says on stderr what it picked, ``attnkit quantize`` saves weights that the
commands then load with identical output, and bad values are one line with exit 2."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _runs import ERROR_PREFIX, minilm_dir, run_cli, train_tiny_runs

from attnkit.layers import quant
from attnkit.layers.quant import Capabilities

QUANTIZED = ["int8", "bf16"]
TEXTS = b"a big dog runs\nthe red house\n\nsmall cat under the green tree\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("dtype-runs")
    runs = train_tiny_runs(tmp)
    (tmp / "corpus.txt").write_text("A man plays a guitar.\nTwo dogs run in the snow.\nA woman reads a book.\n"
                                    "The children play football in the park.\n")
    return {**runs, "minilm": minilm_dir(), "text": tmp / "text.txt", "tsv": tmp / "labels.tsv",
            "corpus": tmp / "corpus.txt"}


def _ok(argv: list[str], stdin: bytes = b"") -> tuple[bytes, str]:
    code, out, err = run_cli(argv, stdin)
    assert code == 0, err
    return out, err


def _vectors(out: bytes) -> np.ndarray:
    return np.array([json.loads(line) for line in out.decode().splitlines()])


# Each command with --dtype, its stdin, and how close its output must stay to fp32's.
def _commands(r: dict[str, Path]) -> dict[str, tuple[list[str], bytes]]:
    return {
        "translate run": (["translate", "run", str(r["translate"]), "--quiet"], TEXTS),
        "lm sample": (["lm", "sample", str(r["lm"]), "--prompt", "the ", "--max-new-tokens", "12", "--seed", "1"],
                      b""),
        "lm eval": (["lm", "eval", str(r["lm"]), "--text", str(r["text"]), "--json"], b""),
        "embed": (["embed", "--model", str(r["minilm"]), "--format", "jsonl"], TEXTS),
        "embed run": (["embed", "--model", str(r["mlm"]), "--format", "jsonl"], TEXTS),
        "similar": (["similar", "--model", str(r["minilm"]), "--corpus", str(r["corpus"]), "--query",
                     "A dog runs through snow.", "-k", "4"], b""),
        "classify run": (["classify", "run", str(r["classify"])], TEXTS),
        "classify eval": (["classify", "eval", str(r["classify"]), "--data", str(r["tsv"]), "--split", "all"], b""),
    }


@pytest.mark.parametrize("name", ["translate run", "lm sample", "lm eval", "embed run", "classify run",
                                  "classify eval"])
def test_fp32_flag_prints_what_no_flag_prints(runs, name: str) -> None:
    argv, stdin = _commands(runs)[name]
    assert _ok(argv, stdin) == _ok([*argv, "--dtype", "fp32"], stdin)


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_lm_eval_perplexity_close_to_fp32(runs, dtype: str) -> None:
    argv, _ = _commands(runs)["lm eval"]
    ref, got = (json.loads(_ok([*argv, "--dtype", d])[0]) for d in ("fp32", dtype))
    assert got["tokens"] == ref["tokens"]
    assert got["perplexity"] == pytest.approx(ref["perplexity"], rel=0.01)


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_lm_sample_and_translate_run_give_one_output_per_input(runs, dtype: str) -> None:
    argv, _ = _commands(runs)["lm sample"]
    assert _ok([*argv, "--dtype", dtype])[0].decode().startswith("the ")
    argv, stdin = _commands(runs)["translate run"]
    ref, got = (_ok([*argv, "--dtype", d], stdin)[0].decode().splitlines() for d in ("fp32", dtype))
    assert len(got) == len(ref) == 4  # the outputs' quality: tests/tasks/test_dtype.py (a trained model)


@pytest.mark.parametrize(("dtype", "floor"), [("bf16", 0.995), ("int8", 0.98)])
def test_embed_real_minilm_cosine_to_fp32(runs, dtype: str, floor: float) -> None:
    """bf16 keeps MiniLM within issue 16's 0.995 floor; explicit int8 does not (measured: 0.9939 at worst on
    66 sentences, 0.983 on the empty line, [CLS] [SEP] only), which is why ``auto`` never picks int8 for
    embeddings."""
    argv, stdin = _commands(runs)["embed"]
    ref, got = (_vectors(_ok([*argv, "--dtype", d], stdin)[0]) for d in ("fp32", dtype))
    assert got.shape == ref.shape == (4, 384)
    assert (got * ref).sum(1).min() >= floor


@pytest.mark.parametrize("dtype", ["int8"])  # bf16: the same code path, checked by the embed test
def test_similar_ranks_as_fp32(runs, dtype: str) -> None:
    argv, _ = _commands(runs)["similar"]
    ref, got = ([line.split("\t") for line in _ok([*argv, "--dtype", d])[0].decode().splitlines()]
                for d in ("fp32", dtype))
    assert [r[1] for r in got][:1] == [r[1] for r in ref][:1] == ["2"]  # the snow dogs first
    assert np.allclose([float(r[0]) for r in got], [float(r[0]) for r in ref], atol=0.02)


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_classify_close_to_fp32(runs, dtype: str) -> None:
    argv, stdin = _commands(runs)["classify run"]
    ref, got = ([line.split("\t") for line in _ok([*argv, "--dtype", d], stdin)[0].decode().splitlines()]
                for d in ("fp32", dtype))
    assert len(got) == len(ref) == 4
    for (label, p), (ref_label, ref_p) in zip(got, ref, strict=True):  # the tiny model sits near 0.5
        assert abs(float(p) - float(ref_p)) <= 0.02 and (label == ref_label or abs(float(ref_p) - 0.5) < 0.02)
    argv, _ = _commands(runs)["classify eval"]
    acc = [float(re.search(r"accuracy (\S+)", _ok([*argv, "--dtype", d])[0].decode())[1]) for d in ("fp32", dtype)]
    assert abs(acc[0] - acc[1]) <= 0.1


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_viz_attention_close_to_fp32(runs, tmp_path, dtype: str) -> None:
    from attnkit.viz.load import attention_maps, open_model

    if dtype == "int8":  # the command itself once (drawing the PNGs takes seconds)
        out, _ = _ok(["viz", str(runs["lm"]), "--text", "the big dog", "--out", str(tmp_path), "--dtype", dtype])
        assert out and all(Path(p).is_file() for p in out.decode().splitlines())
    for name in ("translate", "lm", "mlm"):
        ref, got = (attention_maps(open_model(runs[name], d), "the big dog", "1999" if name == "translate" else None)
                    for d in ("fp32", dtype))
        for a, b in zip(ref.maps, got.maps, strict=True):
            assert torch.allclose(torch.as_tensor(a.weights), torch.as_tensor(b.weights), atol=0.02)


def test_auto_says_what_it_picked(runs, monkeypatch) -> None:
    monkeypatch.setattr(quant, "capabilities", lambda device="cpu": Capabilities("cpu", True, True, ("fake",)))
    for name, picked in (("lm sample", "int8"), ("embed", "bf16"), ("classify run", "bf16")):
        argv, stdin = _commands(runs)[name]
        _, err = _ok([*argv, "--dtype", "auto"], stdin)
        notes = [line for line in err.splitlines() if "--dtype" in line]
        assert len(notes) == 1 and notes[0].startswith(f"attnkit: note: --dtype auto: {picked}, ")
        assert notes[0].endswith("(fake)")
    monkeypatch.setattr(quant, "capabilities", lambda device="cpu": Capabilities("cpu", False, False))
    argv, stdin = _commands(runs)["translate run"]
    out, err = _ok([*argv, "--dtype", "auto"], stdin)
    assert "auto: fp32, no native int8 or bf16 units" in err and out == _ok(argv, stdin)[0]


def test_quantize_once_then_load_with_identical_output(runs, tmp_path) -> None:
    run = tmp_path / "mlm"
    shutil.copytree(runs["mlm"], run)
    argv = ["embed", "--model", str(run), "--format", "jsonl", "--dtype", "int8"]
    before = _ok(argv, TEXTS)[0]
    out, err = _ok(["quantize", str(run), "--dtype", "int8"])
    assert out.decode().strip() == str(run / "model.int8.safetensors") and "int8 weights of" in err
    assert _ok(argv, TEXTS)[0] == before  # loaded from the file: the tensors quantizing gives
    code, _, err = run_cli(argv[:-2] + ["--dtype", "auto", "--quiet"], TEXTS)
    assert code == 0 and "weights from" not in err  # auto on an encoder: bf16 or fp32, not this int8 file


def test_serve_passes_the_choice_to_every_model(runs, monkeypatch) -> None:
    import attnkit.serve.app as app

    class Opened(Exception):
        pass

    def fake_app(opened, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise Opened(opened)

    monkeypatch.setattr(app, "create_app", fake_app)
    with pytest.raises(Opened) as got:
        run_cli(["serve", f"t={runs['translate']}", f"g={runs['lm']}", "--dtype", "int8", "--port", "0"])
    assert {name: r.precision.dtype for name, r in got.value.args[0].items()} == {"t": "int8", "g": "int8"}


@pytest.mark.parametrize("argv", [["translate", "run", "{translate}"], ["lm", "eval", "{lm}", "--text", "{text}"],
                                  ["embed", "--model", "{mlm}"], ["similar", "--model", "{mlm}", "--corpus", "{text}",
                                                                  "--query", "x"],
                                  ["classify", "run", "{classify}"], ["viz", "{lm}", "--text", "a", "--out", "{text}"],
                                  ["serve", "{lm}"], ["quantize", "{lm}"]])
def test_bad_dtype_is_one_argparse_line(runs, argv: list[str]) -> None:
    argv = [a.format(**{k: str(v) for k, v in runs.items()}) for a in argv]
    code, out, err = run_cli([*argv, "--dtype", "fp16"])
    assert code == 2 and out == b""
    assert err.splitlines()[-1].endswith("argument --dtype: invalid choice: 'fp16' (choose from "
                                         + ("'int8', 'bf16')" if argv[0] == "quantize" else
                                            "'auto', 'fp32', 'bf16', 'int8')"))


def test_int8_on_cuda_is_one_line(runs) -> None:
    code, out, err = run_cli(["lm", "sample", str(runs["lm"]), "--device", "cuda", "--dtype", "int8"])
    assert (code, out, err) == (2, b"", f"{ERROR_PREFIX} int8 inference runs on the CPU only, not on cuda\n")
