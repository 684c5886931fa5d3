"""`attnkit lm train | sample | eval` end to end on tiny text, exact resume, --hf directories, and the
one-line errors for bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.cli.main import main
from attnkit.evaluation.perplexity import evaluate_lm
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.gpt2 import save_gpt2
from attnkit.tokenizers.char import TextTokenizer
from attnkit.training.checkpoint import latest_checkpoint, load_model_weights, read_meta

TRAIN = ["--preset", "tiny", "--block-size", "16", "--batch-size", "4", "--eval-every", "3", "--ckpt-every", "3",
         "--log-every", "1", "--quiet", "--seed", "1"]


def _text(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "speaks", "to", "all", "and", "none", "hear"]
    lines = [" ".join(rng.choice(words, 6)) + ".\n" for _ in range(150)]
    path = tmp / "text.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("lm")
    text = _text(tmp)
    out = tmp / "run"
    assert main(["lm", "train", "--text", str(text), "--out", str(out), "--steps", "6", *TRAIN]) == 0
    return out, text


def _load(run_dir: Path) -> GPT:
    model = GPT(GPTConfig.from_dict(read_meta(run_dir, family="gpt")["model_config"]))
    load_model_weights(model, run_dir, family="gpt")
    return model.eval()


def test_train_writes_the_run(run) -> None:
    out, _ = run
    for name in ("run.json", "tokenizer.json", "gpt_config.json", "data/train.npy", "data/val.npy",
                 "metrics.jsonl"):
        assert (out / name).is_file(), name
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6] and evals[-1]["val_loss"] > 0
    train_losses = [r["loss"] for r in recs if r["kind"] == "train"]
    assert train_losses[-1] < train_losses[0]
    assert latest_checkpoint(out).name == "step-00000006"
    tok = TextTokenizer.load(out)
    train_ids, val_ids = np.load(out / "data/train.npy"), np.load(out / "data/val.npy")
    assert len(val_ids) == pytest.approx(0.1 * (len(train_ids) + len(val_ids)), abs=1)
    assert tok.vocab_size == _load(out).config.vocab_size


def test_resume_gives_the_same_weights_as_one_run(run, tmp_path) -> None:
    out, text = run
    part = tmp_path / "part"
    shutil.copytree(out, part)
    shutil.rmtree(part / "checkpoints" / "step-00000006")
    assert main(["lm", "train", "--text", str(text), "--out", str(part), "--steps", "6", *TRAIN]) == 0
    for (k, a), b in zip(_load(out).state_dict().items(), _load(part).state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_sample_and_eval(run, capsys) -> None:
    out, text = run
    args = ["lm", "sample", str(out), "--prompt", "the king", "--max-new-tokens", "40", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("the king")
    assert len(first.rstrip("\n")) == len("the king") + 40  # past the context of 16: windowed
    assert main(["lm", "eval", str(out), "--text", str(text), "--split", "val", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    tok = TextTokenizer.load(out)
    ids = np.array(tok.encode(text.read_text()))
    expected = evaluate_lm(_load(out), ids[int(len(ids) * 0.9) :], 16, 32)
    assert got["loss"] == pytest.approx(expected.loss) and got["tokens"] == expected.tokens
    assert main(["lm", "eval", str(out), "--text", str(text)]) == 0
    assert "perplexity" in capsys.readouterr().out


def test_bpe_run_and_hf_directory_sample_the_same(run, tmp_path, capsys) -> None:
    _, text = run
    out = tmp_path / "bpe"
    assert main(["lm", "train", "--text", str(text), "--out", str(out), "--tokenizer", "bpe", "--bpe-vocab",
                 "300", "--steps", "2", *TRAIN]) == 0
    capsys.readouterr()
    model = _load(out)
    save_gpt2(model, tmp_path / "hf", TextTokenizer.load(out))
    greedy = ["--prompt", "the queen", "--max-new-tokens", "8", "--temperature", "0"]
    assert main(["lm", "sample", str(out), *greedy]) == 0
    from_run = capsys.readouterr().out
    assert main(["lm", "sample", "--hf", str(tmp_path / "hf"), *greedy]) == 0
    assert capsys.readouterr().out == from_run


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("empty", "empty"),
        ("latin1", r"latin1.txt is not valid UTF-8 \(line 1: .* at byte 3\)"),
        ("unknown", "does not know"),
        ("long", "longer than the model's context"),
        ("missing", "no such run"),
        ("neither", "either a run directory or --hf"),
        ("wrong-family", "not 'gpt'|expected"),
    ],
)
def test_bad_input_is_one_line_exit_2(case: str, pattern: str, run, tmp_path, capsys) -> None:
    out, text = run
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    argv = {
        "empty": ["lm", "train", "--text", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "r"), *TRAIN],
        "latin1": ["lm", "eval", str(out), "--text", str(tmp_path / "latin1.txt")],
        "unknown": ["lm", "sample", str(out), "--prompt", "the kïng"],
        "long": ["lm", "sample", str(out), "--prompt", "the king " * 3],
        "missing": ["lm", "sample", str(tmp_path / "nope"), "--prompt", "the"],
        "neither": ["lm", "sample", "--prompt", "the"],
        "wrong-family": ["lm", "sample", str(out), "--prompt", "the"],
    }[case]
    if case == "wrong-family":
        meta = json.loads((latest_checkpoint(out) / "meta.json").read_text())
        fake = tmp_path / "bert" / "checkpoints" / "step-00000001"
        fake.mkdir(parents=True)
        (fake / "meta.json").write_text(json.dumps({**meta, "family": "bert"}))
        argv[2] = str(tmp_path / "bert")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnkit: error:") and "\n" not in err
    assert re.search(pattern, err), err
