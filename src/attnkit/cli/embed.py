"""`attnkit embed` (one sentence vector per input line) and `attnkit similar` (cosine top-k in a corpus).

    attnkit embed --model DIR|RUN [--format npy|jsonl] < lines > vectors
    attnkit similar --model DIR|RUN --corpus FILE --query TEXT -k 5
    (both: --dtype auto|fp32|bf16|int8, the inference precision; docs/speed.md)

DIR is a Hugging Face BERT directory (e.g. all-MiniLM-L6-v2), RUN an attnkit BERT run. Vectors are
mean-pooled, L2-normalised last hidden states (Sentence-BERT), computed in length-sorted batches.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from attnkit.cli.common import add_dtype_arg, dtype_note, note, stdin_lines
from attnkit.cli.stream import Interruptible, LineWriter, progress_bar
from attnkit.cli.textarg import utf8_text
from attnkit.data.lines import read_lines
from attnkit.errors import CheckpointError, InputError
from attnkit.tasks import limits

# The Python names of the embedding options (errors of attnkit.tasks.limits) -> the flags.
EMBED_OPTIONS = {"batch_size": "--batch-size", "max_length": "--max-length"}


def _input_notes(lines: list[str], truncated: list[int], unknown: list[int], max_length: int) -> None:
    note("empty: embedded as [CLS] [SEP]", [i for i, s in enumerate(lines) if not s.strip()])
    note(f"longer than the model's maximum of {max_length} tokens: truncated", truncated)
    note("contain characters unknown to the vocabulary (read as [UNK])", unknown)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face BERT directory or attnkit BERT run")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default %(default)s)")
    p.add_argument("--max-length", type=int, default=None, help="tokens kept per sentence (default: model's)")
    add_dtype_arg(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="sentence embeddings, one vector per input line (stdin -> stdout)")
    _add_model_args(p)
    p.add_argument("--format", choices=("npy", "jsonl"), default="npy", help="output format (default npy)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_embed)
    q = sub.add_parser("similar", help="the corpus lines most similar to a query (cosine of embeddings)")
    _add_model_args(q)
    q.add_argument("--corpus", required=True, help="text file, one sentence per line")
    q.add_argument("--query", required=True, type=utf8_text, help="the sentence to search for")
    q.add_argument("-k", type=int, default=5, help="number of results (default %(default)s)")
    q.set_defaults(func=_similar)


def _load(args: argparse.Namespace):  # noqa: ANN202
    from attnkit.tasks.bert import open_bert

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_length is not None and args.max_length < 2:
        raise InputError(f"--max-length must be >= 2, got {args.max_length}")
    if not Path(args.model).exists():
        raise CheckpointError(f"{args.model}: no such model directory or run")
    run = open_bert(args.model, args.dtype)
    dtype_note(run, args.dtype)
    return run.inference


def _limit(args: argparse.Namespace, embedder) -> int:  # noqa: ANN001
    """--max-length, or the model's maximum when it is unset or larger (the latter with a warning)."""
    if args.max_length is not None and args.max_length > embedder.max_positions:
        print(f"attnkit: warning: --max-length {args.max_length} is more than the model's "
              f"{embedder.max_positions} positions; using {embedder.max_positions}", file=sys.stderr)
    return min(args.max_length or embedder.max_positions, embedder.max_positions)


def _encode(args: argparse.Namespace, embedder, lines: list[str], on_rows=None):  # noqa: ANN001, ANN202
    limit = _limit(args, embedder)
    with limits.option_names(EMBED_OPTIONS):
        return embedder.embed(lines, batch_size=args.batch_size, max_length=limit, on_rows=on_rows), limit


def _embed(args: argparse.Namespace) -> int:
    """Embed stdin's lines, writing the vectors of each line as soon as it and the lines before it are done
    (npy: the header first); Ctrl-C / SIGTERM: exit 130 / 143 after whole rows, with one line saying how
    many."""
    if args.format == "npy" and sys.stdout.isatty():
        raise InputError("refusing to write binary .npy data to a terminal: redirect stdout or use --format jsonl")
    loaded = _load(args)
    lines = stdin_lines()
    if not lines:
        raise InputError("no input lines on stdin (one sentence per line expected)")
    bar = progress_bar(len(lines), "line", args.quiet)
    guard = Interruptible(lambda: writer.progress())
    writer = LineWriter(sys.stdout, len(lines), guard, bar)
    header_written = False

    def write(start: int, vectors) -> None:  # noqa: ANN001
        nonlocal header_written
        rows = vectors.numpy().astype(np.float32)
        if args.format == "jsonl":
            writer.write([json.dumps([round(float(x), 7) for x in v]) for v in rows])
            return
        if not header_written:  # what np.save writes for the whole [N, E] float32 array
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(rows.dtype),
                                                          "fortran_order": False,
                                                          "shape": (len(lines), rows.shape[1])})
            writer.write_binary(header.getvalue(), 0)
            header_written = True
        writer.write_binary(rows.tobytes(), len(rows))

    with bar, guard:
        out, limit = _encode(args, loaded, lines, on_rows=write)
    _input_notes(lines, out.truncated, out.unknown, limit)
    return 0


def _similar(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise InputError(f"-k must be >= 1, got {args.k}")
    if not args.query.strip():
        raise InputError("--query is empty")
    loaded = _load(args)
    corpus = read_lines(args.corpus)
    keep = [i for i, s in enumerate(corpus) if s.strip()]
    if not keep:
        raise InputError(f"{args.corpus}: no non-empty lines to search")
    texts = [corpus[i] for i in keep]
    out, limit = _encode(args, loaded, texts + [args.query])
    note(f"longer than the model's maximum of {limit} tokens: truncated",
         [keep[i] for i in out.truncated if i < len(keep)])
    if len(keep) in out.truncated:
        print(f"attnkit: note: the query is longer than {limit} tokens: truncated", file=sys.stderr)
    vecs = out.vectors
    scores = vecs[:-1] @ vecs[-1]  # (N,) cosine: the vectors are unit length
    top = scores.topk(min(args.k, len(texts)))
    for score, j in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        sys.stdout.write(f"{score:.4f}\t{keep[j] + 1}\t{texts[j]}\n")
    return 0
