"""Feed every model-family command its bad inputs and print what the user gets (markdown rows).

    .venv/bin/python bench/cli_bad_inputs.py            # "Model families" in docs/bad-input.md (~30 s)
    .venv/bin/python bench/cli_bad_inputs.py --numeric  # "Numeric options" (every numeric option of every
                                                        # command: huge, zero, negative / NaN, inf; ~5 min)

Tiny runs of each family are trained in a temporary directory first (tests/cli/_runs.py); each case then
runs ``attnkit ...`` in this process. The last stderr line is shown (for exit 0, the stdout shape and any
note); paths are shown relative to the temporary directory (``RUN/translate`` is a translation run,
``RUN/lm`` a character GPT run, ``RUN/lm_bpe`` a byte-BPE GPT run, ``RUN/mlm`` a BERT masked-LM run,
``RUN/classify`` a classifier, ``MINILM`` the all-MiniLM-L6-v2 folder). The property-based tests in
tests/cli/test_bad_input_fuzz.py check the same promises on random input.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "cli"))
from _options import COMMANDS, STREAMING, names  # noqa: E402
from _runs import make_runs, run_cli  # noqa: E402
from _zygote import Zygote  # noqa: E402

# The values tried for each numeric option (the property test in tests/cli/test_bounded.py tries many more).
NUMERIC_VALUES = {"int": ["1000000000000", "0", "-1"], "float": ["inf", "nan", "-1"]}

NOT_UTF8 = b"the dog \xff\xfe runs\n"
LONG = "dog " * 5000  # 20,000 characters

# (family, bad input, argv with {placeholders}, stdin bytes)
CASES: list[tuple[str, str, list[str], bytes]] = [
    ("translation", "empty stdin", ["translate", "run", "{translate}"], b""),
    ("translation", "stdin not UTF-8", ["translate", "run", "{translate}"], NOT_UTF8),
    ("translation", "empty lines among lines", ["translate", "run", "{translate}"], b"3 May 2001\n\n\n1 June 1999\n"),
    ("translation", "control characters (NUL, ESC, DEL, U+202E)", ["translate", "run", "{translate}"],
     "3 May\x00 2001\x1b[1m\x7f\u202e\n".encode()),
    ("translation", "form feed / U+2028 inside a line", ["translate", "run", "{translate}"],
     "3 May\x0c2001 \u2028x\n".encode()),
    ("translation", "very long line (20,000 characters)", ["translate", "run", "{translate}"], LONG.encode() + b"\n"),
    ("translation", "characters never seen in training (CJK, emoji)", ["translate", "run", "{translate}"],
     "\u4e00\u4e8c \U0001f600\n".encode()),
    ("translation", "--beam 0", ["translate", "run", "{translate}", "--beam", "0"], b"3 May 2001\n"),
    ("translation", "train: --max-tokens 0", ["translate", "train", "--data", "{parallel}", "--src", "words", "--tgt",
                                             "iso", "--out", "{tmp}/ot", "--max-tokens", "0"], b""),
    ("translation", "train: --heads 0", ["translate", "train", "--data", "{parallel}", "--src", "words", "--tgt", "iso",
                                        "--out", "{tmp}/ot", "--heads", "0"], b""),
    ("translation", "train: --label-smoothing 1", ["translate", "train", "--data", "{parallel}", "--src", "words",
                                                  "--tgt", "iso", "--out", "{tmp}/ot", "--label-smoothing", "1"], b""),
    ("translation", "train: parallel files of different lengths", ["translate", "train", "--data", "{uneven}", "--src",
                                                                  "words", "--tgt", "iso", "--out", "{tmp}/ot"], b""),
    ("translation", "train: --data not a directory", ["translate", "train", "--data", "{tmp}/nope", "--out",
                                                     "{tmp}/ot"], b""),
    ("translation", "eval: empty split", ["translate", "eval", "{translate}", "--data", "{uneven}", "--split", "empty"],
     b""),
    ("translation", "missing run dir", ["translate", "run", "{tmp}/nope"], b"x\n"),
    ("translation", "empty dir as run", ["translate", "run", "{tmp}/empty"], b"x\n"),
    ("translation", "run dir of another family (GPT)", ["translate", "run", "{lm}"], b"x\n"),
    ("translation", "truncated model.safetensors", ["translate", "run", "{broken}"], b"x\n"),
    ("translation", "corrupt tokenizer.json", ["translate", "run", "{broken_tok}"], b"x\n"),
    ("GPT", "prompt with characters the char vocabulary lacks", ["lm", "sample", "{lm}", "--prompt=caf\u00e9 \u4e00",
                                                                "--max-new-tokens", "5"], b""),
    ("GPT", "prompt longer than the context (byte BPE)", ["lm", "sample", "{lm_bpe}", f"--prompt={LONG[:400]}"], b""),
    ("GPT", "very long generation (--max-new-tokens 100 > context 16)",
     ["lm", "sample", "{lm_bpe}", "--prompt=the", "--max-new-tokens", "100", "--seed", "0"], b""),
    ("GPT", "empty prompt (char run)", ["lm", "sample", "{lm}", "--prompt=", "--max-new-tokens", "5", "--seed", "0"],
     b""),
    ("GPT", "control characters in the prompt (byte BPE)", ["lm", "sample", "{lm_bpe}", "--prompt=a\x00\x1b\x7f",
                                                            "--max-new-tokens", "5", "--seed", "0"], b""),
    ("GPT", "prompt bytes not UTF-8 (`--prompt $'\\xff'`)", ["lm", "sample", "{lm_bpe}", "--prompt", "a\udcff"], b""),
    ("GPT", "prompt starting with '-' (`--prompt -x`)", ["lm", "sample", "{lm_bpe}", "--prompt", "-x"], b""),
    ("GPT", "--max-new-tokens -1", ["lm", "sample", "{lm}", "--max-new-tokens", "-1"], b""),
    ("GPT", "--temperature -1", ["lm", "sample", "{lm}", "--temperature", "-1"], b""),
    ("GPT", "sample from a BERT run", ["lm", "sample", "{mlm}"], b""),
    ("GPT", "--temperature nan", ["lm", "sample", "{lm}", "--temperature", "nan"], b""),
    ("GPT", "--seed 10**20", ["lm", "sample", "{lm}", "--seed", "100000000000000000000"], b""),
    ("GPT", "lm train: --bpe-vocab 100 (< 257)", ["lm", "train", "--text", "{ok_file}", "--out", "{tmp}/ob",
                                                  "--tokenizer", "bpe", "--bpe-vocab", "100"], b""),
    ("GPT", "lm train: --eval-batches 0", ["lm", "train", "--text", "{long_file}", "--out", "{tmp}/oe", "--preset",
                                          "tiny", "--block-size", "8", "--eval-batches", "0"], b""),
    ("GPT", "neither RUN nor --hf", ["lm", "sample"], b""),
    ("GPT", "corrupt tokenizer.json", ["lm", "sample", "{broken_lm}"], b""),
    ("GPT", "lm eval: empty file", ["lm", "eval", "{lm}", "--text", "{empty_file}"], b""),
    ("GPT", "lm eval: file not UTF-8", ["lm", "eval", "{lm}", "--text", "{bad_file}"], b""),
    ("GPT", "lm eval: characters the char vocabulary lacks", ["lm", "eval", "{lm}", "--text", "{cjk_file}"], b""),
    ("GPT", "lm eval: one-character file", ["lm", "eval", "{lm}", "--text", "{one_char}"], b""),
    ("GPT", "lm eval: missing file", ["lm", "eval", "{lm}", "--text", "{tmp}/nope.txt"], b""),
    ("GPT", "lm train: empty file", ["lm", "train", "--text", "{empty_file}", "--out", "{tmp}/o1"], b""),
    ("GPT", "lm train: file not UTF-8", ["lm", "train", "--text", "{bad_file}", "--out", "{tmp}/o2"], b""),
    ("GPT", "lm train: text shorter than the context", ["lm", "train", "--text", "{cjk_file}", "--out", "{tmp}/o3",
                                                        "--preset", "tiny"], b""),
    ("GPT", "lm train: --out is a run of another family", ["lm", "train", "--text", "{ok_file}", "--out", "{mlm}"],
     b""),
    ("BERT", "mlm train: empty file", ["mlm", "train", "--text", "{empty_file}", "--out", "{tmp}/o4"], b""),
    ("BERT", "mlm train: one line", ["mlm", "train", "--text", "{one_char}", "--out", "{tmp}/o5"], b""),
    ("BERT", "mlm train: file not UTF-8", ["mlm", "train", "--text", "{bad_file}", "--out", "{tmp}/o6"], b""),
    ("BERT", "classify run: empty stdin", ["classify", "run", "{classify}"], b""),
    ("BERT", "classify run: stdin not UTF-8", ["classify", "run", "{classify}"], NOT_UTF8),
    ("BERT", "classify run: empty line, unknown characters, 20,000-character line", ["classify", "run", "{classify}"],
     ("\n\u4e00\u4e8c\n" + LONG + "\n").encode()),
    ("BERT", "classify run: a BERT masked-LM run", ["classify", "run", "{mlm}"], b"x\n"),
    ("BERT", "classify train: malformed TSV rows", ["classify", "train", "--data", "{bad_tsv}", "--init", "{mlm}",
                                                   "--out", "{tmp}/o7"], b""),
    ("BERT", "classify train: --holdout 0", ["classify", "train", "--data", "{good_tsv}", "--init", "{mlm}",
                                            "--out", "{tmp}/oh", "--holdout", "0"], b""),
    ("BERT", "classify train: only one label", ["classify", "train", "--data", "{one_label}", "--init", "{mlm}",
                                               "--out", "{tmp}/o8"], b""),
    ("BERT", "classify train: TSV not UTF-8", ["classify", "train", "--data", "{bad_file}", "--init", "{mlm}",
                                              "--out", "{tmp}/o9"], b""),
    ("BERT", "classify train: --init missing", ["classify", "train", "--data", "{good_tsv}", "--init",
                                               "{tmp}/nope", "--out", "{tmp}/o10"], b""),
    ("BERT", "classify train: --init a GPT run", ["classify", "train", "--data", "{good_tsv}", "--init", "{lm}",
                                                 "--out", "{tmp}/o11"], b""),
    ("BERT", "classify eval: labels the model does not know", ["classify", "eval", "{classify}", "--data",
                                                              "{other_labels}"], b""),
    ("BERT", "classify eval: held-out split empty (one row)", ["classify", "eval", "{classify}", "--data",
                                                              "{one_row}"], b""),
    ("BERT", "embed: empty stdin", ["embed", "--model", "{minilm}", "--format", "jsonl"], b""),
    ("BERT", "embed: stdin not UTF-8", ["embed", "--model", "{minilm}", "--format", "jsonl"], NOT_UTF8),
    ("BERT", "embed: empty line, control characters, 20,000-character line",
     ["embed", "--model", "{minilm}", "--format", "jsonl"], ("\n\x00\x1b\u2028\n" + LONG + "\n").encode()),
    ("BERT", "embed: --model a GPT run", ["embed", "--model", "{lm}"], b"x\n"),
    ("BERT", "similar: empty --query", ["similar", "--model", "{minilm}", "--corpus", "{ok_file}", "--query", " "],
     b""),
    ("BERT", "similar: --query bytes not UTF-8", ["similar", "--model", "{minilm}", "--corpus", "{ok_file}",
                                                 "--query", "caf\udce9"], b""),
    ("BERT", "similar: empty corpus", ["similar", "--model", "{minilm}", "--corpus", "{empty_file}", "--query", "a"],
     b""),
    ("BERT", "similar: corpus not UTF-8", ["similar", "--model", "{minilm}", "--corpus", "{bad_file}", "--query", "a"],
     b""),
    ("viz", "empty --text", ["viz", "{lm_bpe}", "--text=", "--out", "{tmp}/v"], b""),
    ("viz", "--text longer than the context", ["viz", "{lm_bpe}", f"--text={LONG[:400]}", "--out", "{tmp}/v"], b""),
    ("viz", "--text bytes not UTF-8", ["viz", "{mlm}", "--text", "\udcff", "--out", "{tmp}/v"], b""),
    ("viz", "--target on a GPT run", ["viz", "{lm_bpe}", "--text", "a", "--target", "b", "--out", "{tmp}/v"], b""),
    ("viz", "--layer out of range", ["viz", "{mlm}", "--text", "the dog", "--layer", "9", "--out", "{tmp}/v"], b""),
    ("viz", "unknown characters (char GPT run)", ["viz", "{lm}", "--text", "\u4e00", "--out", "{tmp}/v"], b""),
]


def _files(tmp: Path, runs: dict[str, Path]) -> dict[str, str]:
    files = {"empty_file": b"", "bad_file": NOT_UTF8, "cjk_file": "\u4e00\u4e8c\u4e09\n".encode(), "one_char": b"a",
             "ok_file": b"the dog runs\nthe cat sleeps\n", "bad_tsv": b"pos\tthe dog\nneg the cat\n\tno label\n",
             "one_label": b"pos\tthe dog\npos\tthe cat\n", "good_tsv": b"pos\tthe dog\nneg\tthe cat\n",
             "other_labels": b"happy\tthe dog\nneg\tthe cat\n"}
    names = {k: str(v) for k, v in runs.items()}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
        names[name] = str(tmp / name)
    (tmp / "empty").mkdir()
    (tmp / "long_file").write_text("the dog runs under the tree.\n" * 30)
    names["long_file"] = str(tmp / "long_file")
    names["parallel"] = str(tmp / "parallel")
    (tmp / "uneven").mkdir()
    (tmp / "uneven" / "train.words").write_text("a\nb\n")
    (tmp / "uneven" / "train.iso").write_text("a\n")
    names["uneven"] = str(tmp / "uneven")
    (tmp / "uneven" / "empty.words").write_text("")
    (tmp / "uneven" / "empty.iso").write_text("")
    (tmp / "one_row").write_text("pos\tthe dog\n")
    names["one_row"] = str(tmp / "one_row")
    broken = tmp / "broken"
    shutil.copytree(runs["translate"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    for name, run in (("broken_tok", "translate"), ("broken_lm", "lm")):
        shutil.copytree(runs[run], tmp / name)
        for tok in (tmp / name).glob("tokenizer*.json"):
            tok.write_text("{not json")
    return {**names, "broken": str(broken), "broken_tok": str(tmp / "broken_tok"), "broken_lm": str(tmp / "broken_lm"),
            "tmp": str(tmp)}


def _shown(text: str, tmp: Path, minilm: Path) -> str:
    text = text.replace(str(minilm), "MINILM").replace(str(tmp), "RUN")
    text = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)  # argv bytes
    text = text.encode("unicode_escape").decode("ascii") if any(c < " " for c in text) else text
    return text.replace("|", "\\|")


def numeric_table() -> None:
    """Every numeric option of every command (tests/cli/_options.py) with the values of NUMERIC_VALUES, each
    run in its own process under a 4 GB address-space limit (tests/cli/_zygote.py): exit code, time and the
    last line on stderr (for exit 0, what was written; 143: a streaming command stopped after 30 s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        runs = make_runs(tmp)
        zygote = Zygote(tmp, env)
        print("| command | option | value | exit | time | what the user gets |")
        print("| --- | --- | --- | --- | --- | --- |")
        for command, (argv, stdin, options, _) in COMMANDS.items():
            for option, kind in options:
                for value in NUMERIC_VALUES[kind]:
                    work = tmp / f"w{zygote.jobs}"
                    work.mkdir()
                    flag = [f"{option}={value}"] if option.startswith("--") else [option, value]
                    args = [a.format(**names(runs, work)) for a in argv] + flag
                    code, out, err, timed_out = zygote.run(args, stdin)
                    seconds = zygote.last_seconds
                    assert "Traceback" not in err, err
                    lines = [x for x in err.splitlines() if x.strip()]
                    if code == 0:
                        n = out.count(b"\n")
                        warned = [x for x in lines if x.startswith("attnkit: warning:")]
                        got = f"{n} output line(s)" + ("; " + "; ".join(warned) if warned else "")
                    else:
                        got = lines[-1] if lines else ""
                    if timed_out:
                        got += f" (stopped by SIGTERM after 30 s{'; it was streaming' if command in STREAMING else ''})"
                    print(f"| {command} | `{option}` | `{value}` | {code} | {seconds * 1000:.0f} ms | "
                          f"{_shown(got.replace(str(work), 'TMP'), tmp, runs['minilm'])} |", flush=True)
        zygote.close()


def main() -> None:
    if "--numeric" in sys.argv[1:]:
        numeric_table()
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        runs = make_runs(tmp)
        names = _files(tmp, runs)
        print("| family | bad input | command | exit | what the user gets |")
        print("| --- | --- | --- | --- | --- |")
        for family, what, argv, stdin in CASES:
            args = [a.format(**names) for a in argv]
            code, out, err = run_cli(args, stdin)
            assert "Traceback" not in err, err
            if code == 0:
                n = out.decode("utf-8").count("\n")
                notes = [x for x in err.splitlines() if x.startswith("attnkit:")]
                got = f"{n} output line(s)" + ("; " + "; ".join(notes) if notes else "")
            else:
                got = err.rstrip("\n").split("\n")[-1]
            shown = [_shown(a, tmp, runs["minilm"]) for a in args]
            cmd = "attnkit " + " ".join(a if len(a) < 40 else a[:30] + "..." for a in shown)
            if stdin:
                cmd += f" < ({len(stdin)} bytes)"
            print(f"| {family} | {what} | `{cmd}` | {code} | "
                  f"{_shown(got, tmp, runs['minilm'])} |")


if __name__ == "__main__":
    main()
