"""Pretrained translation directories as runs (attnkit.tasks.pretrained_translation): ``translate run DIR``,
``translate eval DIR`` and ``open_run(DIR).translate`` on Marian, M2M-100 and NLLB directories; the export of
an attnkit run as a Marian directory (transformers loads it and generates attnkit's tokens; attnkit reads it
back exactly); ``--hf NAME`` through the Hugging Face cache layout; bad directories and language codes."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import transformers

from _pretrained_mt import compare_with_generate, m2m100_dir, marian_dir, multi30k, nllb_dir  # tests/_pretrained_mt.py
from attnkit.cli.main import main
from attnkit.data.dates import dates_corpus
from attnkit.errors import CheckpointError
from attnkit.models.hf.hub import download
from attnkit.tasks.pretrained_translation import open_translator
from attnkit.tasks.runs import open_run

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


def cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrained")
    return {"marian": marian_dir(root / "marian", targets=("fra", "spa")), "m2m100": m2m100_dir(root / "m2m100"),
            "nllb": nllb_dir(root / "nllb")}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny attnkit Transformer run on the dates corpus (separate vocabularies would work alike)."""
    tmp = tmp_path_factory.mktemp("run")
    data = tmp / "parallel"
    data.mkdir()
    for split, n, seed in (("train", 200, 0), ("val", 4, 1)):
        c = dates_corpus(n, seed=seed)
        (data / f"{split}.words").write_text("".join(s + "\n" for s in c.src))
        (data / f"{split}.iso").write_text("".join(s + "\n" for s in c.tgt))
    code, _, err = cli(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out",
                        str(tmp / "run"), "--preset", "tiny", "--vocab-size", "80", "--max-tokens", "512", "--max-len",
                        "40", "--steps", "30", "--lr", "3e-3", "--warmup", "5", "--val-bleu-n", "2", "--quiet",
                        "--eval-every", "0"])
    assert code == 0, err
    return tmp / "run"


def test_translate_run_and_eval_accept_a_marian_directory(dirs, tmp_path) -> None:
    lines = list(multi30k("de", "val")[:5])
    code, out, err = cli(["translate", "run", str(dirs["marian"]), "--beam", "4", "--quiet"], "\n".join(lines) + "\n")
    assert code == 0, err
    assert out.splitlines() == open_run(dirs["marian"]).translate(lines, beam_size=4)
    code, out, err = cli(["translate", "run", str(dirs["marian"]), "--tgt-lang", "spa", "--quiet"], lines[0] + "\n")
    assert code == 0 and out.count("\n") == 1, err
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.de").write_text("".join(s + "\n" for s in lines))
    (corpus / "test.en").write_text("".join(s + "\n" for s in multi30k("en", "val")[:5]))
    code, out, err = cli(["translate", "eval", str(dirs["marian"]), "--data", str(corpus), "--split", "test",
                          "--src", "de", "--tgt", "en", "--beam", "1"])
    assert code == 0 and "BLEU" in out, err


@pytest.mark.parametrize("name, langs", [("m2m100", ("de", "fr")), ("nllb", ("deu_Latn", "fra_Latn"))])
def test_multilingual_directories_take_language_codes(dirs, name: str, langs: tuple[str, str]) -> None:
    src_lang, tgt_lang = langs
    lines = list(multi30k("de", "val")[:3])
    code, out, err = cli(["translate", "run", str(dirs[name]), "--src-lang", src_lang, "--tgt-lang", tgt_lang,
                          "--quiet"], "\n".join(lines) + "\n")
    assert code == 0, err
    assert out.splitlines() == open_run(dirs[name]).translate(lines, src_lang=src_lang, tgt_lang=tgt_lang)
    code, _, err = cli(["translate", "run", str(dirs[name]), "--src-lang", src_lang, "--tgt-lang", "xx_Yyyy"], "a\n")
    assert code == 2 and err.startswith("attnkit: error: --tgt-lang 'xx_Yyyy': the model has no such language")
    assert err.count("\n") == 1


def test_export_loads_in_transformers_generates_attnkit_tokens_and_reads_back_exactly(run, tmp_path) -> None:
    out = tmp_path / "hf"
    code, _, err = cli(["translate", "export", str(run), "--format", "hf", str(out)])
    assert code == 0, err
    ours = open_translator(run)
    # transformers reads the directory: the tokenizer gives attnkit's ids, the model attnkit's tokens
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf = transformers.MarianMTModel.from_pretrained(out).eval()
    sentences = dates_corpus(12, seed=7).src
    assert [hf_tok(s).input_ids for s in sentences] == ours.src_tok.encode_batch(sentences)
    lengths, budget = compare_with_generate(hf, ours, sentences)
    assert max(n for ns in lengths.values() for n in ns) < budget
    # attnkit reads it back: the same weights, tokenizer and translations
    back = open_run(out)
    assert back.source == "huggingface" and back.family == "translation"
    for (k, a), (_, b) in zip(ours.model.state_dict().items(), back.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert back.translate(sentences, beam_size=4) == ours.translate(sentences, beam_size=4)
    assert back.meta["src"] == "words"


def test_hf_name_resolves_through_the_hub_cache(dirs, tmp_path) -> None:
    """The Hub layout snapshot_download reads offline: models--owner--name/{refs/main, snapshots/<commit>}."""
    repo = tmp_path / "models--attnkit-test--tiny-marian"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(dirs["marian"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    path = download("attnkit-test/tiny-marian", cache_dir=tmp_path, local_files_only=True)
    assert path == repo / "snapshots" / commit
    assert open_translator(path).translate(["Ein Hund."]) == open_run(dirs["marian"]).translate(["Ein Hund."])
    assert download(str(dirs["marian"])) == dirs["marian"]
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        download("attnkit-test/absent", cache_dir=tmp_path, local_files_only=True)


def _bad(d: Path, tmp_path: Path, name: str, change) -> Path:  # noqa: ANN001
    bad = tmp_path / name
    shutil.copytree(d, bad)
    change(bad)
    return bad


def test_bad_directories_are_one_line_errors(dirs, tmp_path) -> None:
    m = dirs["marian"]
    cfg = json.loads((m / "config.json").read_text())
    cases = {
        "model_type 't5' is not supported": _bad(m, tmp_path, "t5", lambda d: (d / "config.json").write_text(
            json.dumps({**cfg, "model_type": "t5"}))),
        "source.spm: missing": _bad(m, tmp_path, "nospm", lambda d: (d / "source.spm").unlink()),
        "weights do not match config.json": _bad(m, tmp_path, "vocab", lambda d: (d / "config.json").write_text(
            json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 7}))),
        "pad_token_id": _bad(m, tmp_path, "pad", lambda d: (d / "config.json").write_text(
            json.dumps({**cfg, "vocab_size": cfg["vocab_size"] - 7}))),
        "cannot read the weights": _bad(m, tmp_path, "cut", lambda d: (d / "model.safetensors").write_bytes(
            (d / "model.safetensors").read_bytes()[:5000])),
        "the source tokenizer has": _bad(m, tmp_path, "tok", lambda d: (d / "vocab.json").write_text(json.dumps(
            {**json.loads((d / "vocab.json").read_text()), **{f"x{i}": 10**4 + i for i in range(20)}}))),
        "tokenizer.json: missing": _bad(dirs["nllb"], tmp_path, "nllbtok", lambda d: (d / "tokenizer.json").unlink()),
    }
    for message, d in cases.items():  # "pad_token_id": ... is outside the vocabulary of N tokens
        code, out, err = cli(["translate", "run", str(d)], "Ein Hund.\n")
        assert (code, out) == (2, ""), (message, err)
        assert err.startswith("attnkit: error: ") and err.count("\n") == 1 and message in err, (message, err)
    code, _, err = cli(["translate", "run", str(dirs["m2m100"]), "--src-lang", "de", "--tgt-lang", "qq"], "a\n")
    assert code == 2 and "--tgt-lang 'qq': the model has no such language code" in err


def test_multilingual_model_without_target_language_says_so(dirs) -> None:
    code, _, err = cli(["translate", "run", str(dirs["m2m100"])], "Ein Hund.\n")
    assert code == 2 and "--tgt-lang is needed" in err


def test_generate_equality_through_open_run_api(dirs) -> None:
    hf = transformers.MarianMTModel.from_pretrained(dirs["marian"]).eval()
    compare_with_generate(hf, open_run(dirs["marian"]).inference, list(multi30k("de", "val")[100:106]),
                          tgt_lang="fra")


def test_decoding_flags_n_best_alignments_sampling_prefix(dirs) -> None:
    d, lines = str(dirs["marian"]), list(multi30k("de", "val")[300:303])
    stdin = "\n".join(lines) + "\n"
    code, out, err = cli(["translate", "run", d, "--beam", "4", "--n-best", "3"], stdin)
    assert code == 0, err
    rows = [r.split("\t") for r in out.splitlines()]
    assert [(int(i), int(k)) for i, k, _, _ in rows] == [(i, k) for i in range(3) for k in (1, 2, 3)]
    for i in range(3):
        scores = [float(r[2]) for r in rows[3 * i : 3 * i + 3]]
        assert scores == sorted(scores, reverse=True)
    best = open_run(dirs["marian"]).translate(lines, beam_size=4)
    assert [r[3] for r in rows[::3]] == best
    code, out, err = cli(["translate", "run", d, "--alignments"], stdin)
    assert code == 0, err
    for line, src in zip(out.splitlines(), lines, strict=True):
        text, pairs = line.split("\t")
        for pair in pairs.split():
            i, j = map(int, pair.split("-"))
            assert 0 <= i < len(src.split()) and 0 <= j < len(text.split())
    runs = [cli(["translate", "run", d, "--sample", "--seed", str(s), "--top-k", "20", "--quiet"], stdin)[1]
            for s in (3, 3, 4)]
    assert runs[0] == runs[1] != runs[2]
    code, out, _ = cli(["translate", "run", d, "--prefix", "A man", "--quiet"], stdin)
    assert code == 0 and all(t.startswith("A man") for t in out.splitlines())
    for flags, message in ((["--beam", "2", "--n-best", "5"], "--n-best must be in [1, beam_size = 2]"),
                           (["--sample", "--beam", "3"], "--sample draws one translation"),
                           (["--sample", "--top-p", "0"], "--top-p must be in (0, 1]"),
                           (["--alignments", "--align-layer", "7"], "--align-layer / --align-heads: layer 7")):
        code, out, err = cli(["translate", "run", d, *flags], stdin)
        assert (code, out) == (2, "") and err.count("\n") == 1 and message in err, (flags, err)
