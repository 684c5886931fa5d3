"""`attnkit translate train | run | eval` end to end on tiny data, and its bad-input behaviour."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from attnkit.cli.main import main
from attnkit.data.dates import dates_corpus
from attnkit.tasks.translation import load_run


def _corpus(tmp: Path) -> Path:
    data = tmp / "data"
    data.mkdir()
    for split, n, seed in (("train", 300, 0), ("val", 20, 1), ("test", 20, 2)):
        c = dates_corpus(n, seed=seed)
        (data / f"{split}.words").write_text("".join(s + "\n" for s in c.src))
        (data / f"{split}.iso").write_text("".join(s + "\n" for s in c.tgt))
    return data


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("translate")
    data = _corpus(tmp)
    out = tmp / "run"
    code = main(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out", str(out),
                 "--preset", "tiny", "--vocab-size", "120", "--max-tokens", "512", "--steps", "6",
                 "--eval-every", "3", "--ckpt-every", "2", "--keep", "3", "--average-last", "2", "--val-bleu-n", "5",
                 "--log-every", "2", "--quiet"])
    assert code == 0
    return out


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_train_writes_run_dir(run_dir: Path) -> None:
    for name in ("run.json", "config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl",
                 "train_config.json"):
        assert (run_dir / name).is_file(), name
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert evals and {"val_loss", "val_bleu_greedy", "val_chrf_greedy"} <= set(evals[-1])
    assert {"loss", "lr", "tokens_per_s"} <= set(next(r for r in recs if r["kind"] == "train"))
    assert len(list((run_dir / "checkpoints").iterdir())) == 3


def test_resume_continues_from_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "resumed"
    shutil.copytree(run_dir, copy)
    data = run_dir.parent / "data"
    code = main(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out", str(copy),
                 "--preset", "tiny", "--vocab-size", "120", "--max-tokens", "512", "--steps", "8", "--quiet",
                 "--eval-every", "0", "--val-bleu-n", "5"])
    assert code == 0
    steps = [json.loads(x)["step"] for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 8 and min(steps) <= 2  # the earlier log is kept, training went on from step 6


def test_run_one_line_per_line(run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _stdin(monkeypatch, b"the fifth of May 1984\n\n3 June 2001\n")
    assert main(["translate", "run", str(run_dir), "--beam", "2"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""


def test_run_matches_library(run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    sentences = ["the fifth of May 1984", "3 June 2001"]
    expected = load_run(run_dir).translate(sentences, beam_size=1)
    _stdin(monkeypatch, "".join(s + "\n" for s in sentences).encode())
    assert main(["translate", "run", str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == expected


def test_long_line_truncated_with_warning(run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _stdin(monkeypatch, ("May " * 400 + "\n").encode())
    assert main(["translate", "run", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "truncated" in captured.err and len(captured.out.splitlines()) == 1


def test_eval_writes_scores(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "scores.json"
    data = run_dir.parent / "data"
    assert main(["translate", "eval", str(run_dir), "--data", str(data), "--split", "test", "--beam", "1", "2",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["scores"]) == {"greedy", "beam2"} and res["sentences"] == 20
    assert "BLEU" in capsys.readouterr().out


def test_bad_inputs(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _stdin(monkeypatch, b"\xff\xfe bad\n")
    assert main(["translate", "run", str(run_dir)]) == 2
    assert "standard input is not valid UTF-8 (line 1: invalid start byte at byte 0)" in capsys.readouterr().err
    assert main(["translate", "run", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["translate", "run", str(empty)]) == 2
    assert "not a training run directory" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"garbage")
    assert main(["translate", "run", str(corrupt)]) == 2
    assert "corrupt" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    meta = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**meta, "family": "gpt"}))
    assert main(["translate", "run", str(other)]) == 2
    assert "not a translation model" in capsys.readouterr().err
    assert main(["translate", "eval", str(run_dir), "--data", str(tmp_path / "nodata")]) == 2
    assert "no such directory" in capsys.readouterr().err


@pytest.mark.parametrize("score", ["additive", "hard"])
def test_rnn_architecture(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                          score: str) -> None:
    data = run_dir.parent / "data"
    out = tmp_path / "rnn"
    assert main(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out", str(out),
                 "--arch", "rnn", "--score", score, "--preset", "tiny", "--vocab-size", "120", "--max-tokens",
                 "512", "--steps", "3", "--eval-every", "0", "--val-bleu-n", "3", "--quiet"]) == 0
    assert json.loads((out / "run.json").read_text())["arch"] == "rnn"
    _stdin(monkeypatch, b"3 June 2001\n\n")
    assert main(["translate", "run", str(out), "--beam", "2"]) == 0
    assert len(capsys.readouterr().out.split("\n")) == 3
    if score == "hard":
        _stdin(monkeypatch, b"3 June 2001\n")
        assert main(["translate", "run", str(out), "--compile"]) == 2
        assert "has no compiled decoding step" in capsys.readouterr().err


def test_attn_dropout_flag_and_compiled_decoding(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys) -> None:
    """--attn-dropout and --activation-dropout reach the model (config and layers); `translate run --compile`
    prints what the eager run prints."""
    data = run_dir.parent / "data"
    out = tmp_path / "ad"
    assert main(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out", str(out),
                 "--preset", "tiny", "--vocab-size", "120", "--max-tokens", "512", "--steps", "1", "--dropout", "0.2",
                 "--attn-dropout", "0", "--activation-dropout", "0.05", "--eval-every", "0", "--val-bleu-n", "0",
                 "--quiet"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dropout"] == 0.2 and cfg["attn_dropout"] == 0.0 and cfg["activation_dropout"] == 0.05
    layer = load_run(out).model.decoder[0]
    assert (layer.dropout.p, layer.self_attn.dropout, layer.ffn.dropout.p) == (0.2, 0.0, 0.05)
    lines = b"3 June 2001\nthe fourth of july, nineteen ninety\n"
    printed = {}
    for extra in ([], ["--compile"]):
        _stdin(monkeypatch, lines)
        assert main(["translate", "run", str(run_dir), "--beam", "2", "--quiet", *extra]) == 0
        printed[bool(extra)] = capsys.readouterr().out
    assert printed[True] == printed[False] and printed[True].count("\n") == 2


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out", str(out),
                 "--preset", "tiny", "--vocab-size", "120", "--max-tokens", "512", "--max-train-lines", "100",
                 "--eval-every", "0", "--val-bleu-n", "0", "--ckpt-every", "3", "--quiet", *extra])


def test_bpe_dropout_trains_on_new_segmentations_and_resumes_exactly(run_dir: Path, tmp_path: Path, capsys,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--bpe-dropout: run.json keeps the rate; each epoch's sample is a file of the run, drawn once; a run
    stopped at step 5 and resumed to step 10 ends with the weights of an uninterrupted run; a resumed run
    refuses another rate; bad rates are input errors.

    `tokenizers` draws BPE-dropout from an unseeded generator, so the sampler is replaced here by a
    deterministic one whose k-th epoch sample drops the last token of every third pair (shifted by k): two
    runs drawing their epochs in the same order see the same samples, and an epoch drawn twice (a resumed
    run drawing again what it had trained on) would differ."""
    from safetensors.torch import load_file

    from attnkit.tokenizers.subword import SubwordTokenizer

    calls: list[float] = []

    def sample(self: SubwordTokenizer, texts: list[str], dropout: float) -> list[list[int]]:
        k = len(calls) // 2  # the source and the target of an epoch: two calls (one joint tokenizer)
        calls.append(dropout)
        return [ids[:-1] if (i + k) % 3 == 0 and len(ids) > 1 else ids
                for i, ids in enumerate(self.encode_batch(texts))]

    monkeypatch.setattr(SubwordTokenizer, "sample_batch", sample)
    data = run_dir.parent / "data"
    whole, parts, plain = tmp_path / "whole", tmp_path / "parts", tmp_path / "plain"
    assert _train(data, whole, "--bpe-dropout", "0.3", "--steps", "10") == 0
    assert json.loads((whole / "run.json").read_text())["bpe_dropout"] == 0.3
    assert set(calls) == {0.3} and len(calls) >= 6  # 100 pairs at 512 tokens: 3 or more epochs in 10 steps
    samples = sorted(p.name for p in (whole / "subword-samples").iterdir())
    assert len(samples) == 2 and samples[-1] == f"epoch-{len(calls) // 2 - 1:05d}.safetensors"  # older pruned
    calls.clear()
    assert _train(data, parts, "--bpe-dropout", "0.3", "--steps", "5") == 0
    assert _train(data, parts, "--steps", "10") == 0  # resumes with run.json's rate, reading the files it has
    a, b = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _train(data, plain, "--steps", "10") == 0
    c = load_file(plain / "model.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a) and not (plain / "subword-samples").exists()
    capsys.readouterr()
    assert _train(data, parts, "--bpe-dropout", "0.1", "--steps", "12") == 2
    assert "was started with 0.3" in capsys.readouterr().err
    assert _train(data, tmp_path / "bad", "--bpe-dropout", "1.0", "--steps", "1") == 2
    assert "--bpe-dropout must be in [0, 1), got 1.0" in capsys.readouterr().err
