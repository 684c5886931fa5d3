"""The numeric options of every command, for tests/cli/test_bounded.py (the property test) and
bench/cli_bad_inputs.py --numeric (the table in docs/bad-input.md): each command's argv before the option
tried, its stdin, its numeric options and what a successful run prints."""

from __future__ import annotations

from pathlib import Path

# Training runs one step (or stop after 2 s when an option asks for more).
TRAIN = ["--steps", "1", "--eval-every", "0", "--time-limit", "2", "--quiet"]
# command: (argv before the option tried, stdin, [(option, "int" | "float")], what a success prints:
# "lines:N" lines, "prefix:TEXT", "file:NAME" written in {tmp}, "rows" of similar, "files" written, or a
# text the output contains). Placeholders: the runs of tests/cli/_runs.py and the files of names().
COMMANDS: dict[str, tuple[list[str], bytes, list[tuple[str, str]], str]] = {
    "translate run": (["translate", "run", "{translate}"], b"the fifth of May 1999\n",
                      [("--beam", "int"), ("--batch-tokens", "int"), ("--length-penalty", "float")], "lines:1"),
    "translate eval": (["translate", "eval", "{translate}", "--data", "{parallel}", "--split", "val", "--beam", "1"],
                       b"", [("--beam", "int"), ("--length-penalty", "float")], "sacreBLEU"),
    "translate train": (["translate", "train", "--data", "{parallel}", "--src", "words", "--tgt", "iso", "--out",
                         "{tmp}/tt", "--preset", "tiny", "--vocab-size", "60", "--max-tokens", "256", "--max-len",
                         "32", "--val-bleu-n", "2", *TRAIN], b"",
                        [("--d-model", "int"), ("--heads", "int"), ("--d-ff", "int"), ("--layers", "int"),
                         ("--max-len", "int"), ("--vocab-size", "int"), ("--max-tokens", "int"),
                         ("--val-bleu-n", "int"), ("--max-train-lines", "int"), ("--average-last", "int"),
                         ("--threads", "int"), ("--label-smoothing", "float"), ("--dropout", "float"),
                         ("--bpe-dropout", "float")], "file:tt"),
    "lm sample": (["lm", "sample", "{lm_bpe}", "--prompt=the", "--max-new-tokens", "5", "--seed", "0"], b"",
                  [("--max-new-tokens", "int"), ("--num-samples", "int"), ("--temperature", "float"),
                   ("--top-k", "int"), ("--top-p", "float"), ("--seed", "int")], "prefix:the"),
    "lm eval": (["lm", "eval", "{lm}", "--text", "{text}"], b"", [("--batch-size", "int"),
                                                               ("--val-fraction", "float")], "prefix:loss"),
    "lm train": (["lm", "train", "--text", "{text}", "--out", "{tmp}/lt", "--preset", "tiny", "--block-size", "8",
                  "--batch-size", "2", *TRAIN], b"",
                 [("--steps", "int"), ("--batch-size", "int"), ("--block-size", "int"), ("--n-layers", "int"),
                  ("--n-heads", "int"), ("--d-model", "int"), ("--eval-batches", "int"), ("--threads", "int"),
                  ("--warmup", "int"), ("--grad-accum", "int"), ("--seed", "int"), ("--eval-every", "int"),
                  ("--ckpt-every", "int"), ("--keep", "int"), ("--log-every", "int"), ("--lr", "float"),
                  ("--min-lr", "float"), ("--weight-decay", "float"), ("--eps", "float"), ("--clip", "float"),
                  ("--dropout", "float"), ("--val-fraction", "float"), ("--time-limit", "float")], "file:lt"),
    "lm train bpe": (["lm", "train", "--text", "{text}", "--out", "{tmp}/lb", "--preset", "tiny", "--block-size",
                      "8", "--batch-size", "2", "--tokenizer", "bpe", *TRAIN], b"", [("--bpe-vocab", "int")],
                     "file:lb"),
    "mlm train": (["mlm", "train", "--text", "{text}", "--out", "{tmp}/mt", "--preset", "tiny", "--vocab-size", "40",
                   "--max-tokens", "128", *TRAIN], b"",
                  [("--vocab-size", "int"), ("--max-tokens", "int"), ("--val-fraction", "float")], "file:mt"),
    "classify train": (["classify", "train", "--data", "{tsv}", "--init", "{mlm}", "--out", "{tmp}/ct",
                        "--batch-size", "4", *TRAIN], b"",
                       [("--batch-size", "int"), ("--max-length", "int"), ("--holdout", "float"),
                        ("--split-seed", "int")], "file:ct"),
    "embed": (["embed", "--model", "{mlm}", "--format", "jsonl"], b"the dog runs\n\na cat\n",
              [("--batch-size", "int"), ("--max-length", "int")], "lines:3"),
    "similar": (["similar", "--model", "{mlm}", "--corpus", "{text}", "--query", "dog"], b"",
                [("-k", "int"), ("--batch-size", "int"), ("--max-length", "int")], "rows"),
    "viz": (["viz", "{lm}", "--text", "the dog", "--out", "{tmp}/viz"], b"",
            [("--layer", "int"), ("--head", "int"), ("--max-tokens", "int")], "files"),
    "demo": (["demo", "--out", "{tmp}/demo", "--train-size", "200", "--test-size", "4", "--steps", "2",
              "--time-limit", "3", "--quiet"], b"",
             [("--train-size", "int"), ("--test-size", "int"), ("--steps", "int"), ("--time-limit", "float"),
              ("--seed", "int")], "held-out exact match"),
    "attention-demo": (["attention-demo", "--out", "{tmp}/a.png", "--steps", "2"], b"",
                       [("--steps", "int"), ("--seed", "int")], "file:a.png"),
}
STREAMING = ("translate run", "lm sample", "embed")  # may run long, writing as they go


def names(runs: dict[str, Path], tmp: Path) -> dict[str, str]:
    """The placeholders of COMMANDS: the runs, their parallel corpus, a text and a TSV file (written once)."""
    text = tmp / "text.txt"
    if not text.exists():
        text.write_text("the dog runs under the big tree.\na cat sleeps on the red house.\n" * 20)
        (tmp / "d.tsv").write_text("pos\tthe dog runs\nneg\tthe cat sleeps\n" * 6)
    return {**{k: str(v) for k, v in runs.items()}, "parallel": str(runs["translate"].parent / "parallel"),
            "text": str(text), "tsv": str(tmp / "d.tsv"), "tmp": str(tmp)}
