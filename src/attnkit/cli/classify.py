"""`attnkit classify`: fine-tune a BERT for sentence classification, then classify or evaluate.

    attnkit classify train --data TSV --init RUN|HF_DIR --out RUN [--from-scratch] [--steps N] ...
    attnkit classify run RUN < lines            # one "label<TAB>probability" per input line
    attnkit classify eval RUN --data TSV        # accuracy on the held-out split (or --split all)

TSV rows are ``label<TAB>sentence``. A fixed, seeded share (``--holdout 0.1``, ``--split-seed 0``) is held
out as the test split: ``train`` never trains on it (it reports the held-out accuracy while training) and
``eval`` uses the same split, recorded in the run. ``--from-scratch`` keeps the init's tokenizer and shape
but starts from random weights (the baseline for pre-training).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from attnkit.cli.common import add_dtype_arg, dtype_note, note, stdin_lines
from attnkit.cli.train_summary import train_and_summarise
from attnkit.errors import InputError
from attnkit.tasks import limits
from attnkit.training import TrainConfig, add_train_args, latest_checkpoint, train_config_from_args

DEFAULTS = TrainConfig(max_steps=1000, lr=5e-5, warmup=100, schedule="linear", weight_decay=0.01,
                       betas=(0.9, 0.999), eps=1e-6, eval_every=0, ckpt_every=500, log_every=20)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="BERT sentence classification: fine-tune, run, evaluate")
    s = p.add_subparsers(dest="classify_command", metavar="SUBCOMMAND")
    s.required = True
    t = s.add_parser("train", help="fine-tune a BERT on label<TAB>sentence data")
    t.add_argument("--data", required=True, help="TSV file of label<TAB>sentence rows")
    t.add_argument("--init", required=True, help="attnkit BERT run (masked LM or classifier) or Hugging Face dir")
    t.add_argument("--out", required=True, help="run directory (resumed if it has a checkpoint)")
    t.add_argument("--from-scratch", action="store_true", help="random weights (keep init's tokenizer/shape)")
    t.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default %(default)s)")
    t.add_argument("--max-length", type=int, default=128, help="tokens kept per sentence (default %(default)s)")
    _split_args(t)
    add_train_args(t, DEFAULTS)
    t.set_defaults(func=_train)
    r = s.add_parser("run", help="classify stdin lines with a fine-tuned run")
    r.add_argument("run", help="classifier run directory")
    add_dtype_arg(r)
    r.set_defaults(func=_run)
    e = s.add_parser("eval", help="accuracy of a fine-tuned run on labelled data")
    e.add_argument("run", help="classifier run directory")
    e.add_argument("--data", required=True, help="TSV file of label<TAB>sentence rows")
    e.add_argument("--split", choices=("test", "all"), default="test", help="held-out split or every row")
    add_dtype_arg(e)
    e.set_defaults(func=_eval)


def _split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--holdout", type=float, default=0.1, help="held-out test share (default %(default)s)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")


@limits.with_option_names({"batch_size": "--batch-size", "max_length": "--max-length", "grad_accum": "--grad-accum"})
def _train(args: argparse.Namespace) -> int:
    from attnkit.data.tsv import read_tsv
    from attnkit.tasks.bert import classify_task, init_classifier, resume_classifier

    if args.batch_size < 1 or args.max_length < 2:
        raise InputError("--batch-size must be >= 1 and --max-length >= 2")
    if not 0.0 < args.holdout < 1.0 or args.split_seed < 0:
        raise InputError(f"--holdout must be in (0, 1) and --split-seed >= 0, got {args.holdout} and {args.split_seed}")
    cfg = train_config_from_args(args, init=args.init, from_scratch=args.from_scratch, batch_size=args.batch_size,
                                 max_length=args.max_length, holdout=args.holdout, split_seed=args.split_seed)
    data = read_tsv(args.data)
    run = Path(args.out)
    torch.manual_seed(cfg.seed)
    if latest_checkpoint(run) is not None:  # resume: the run's own tokenizer, shape and labels
        model, tok, labels = resume_classifier(run)
    else:
        labels = sorted(set(data.labels))
        if len(labels) < 2:
            raise InputError(f"{args.data}: need at least 2 different labels, found {labels}")
        init = Path(args.init)
        if not (init / "config.json").is_file() and not init.exists():
            raise InputError(f"--init {args.init}: no such run or Hugging Face directory")
        model, tok = init_classifier(init, len(labels), args.from_scratch)
    limit = min(args.max_length, model.config.max_len)
    task, truncated = classify_task(data, args.data, labels, tok, model.config, limit, args.holdout, args.split_seed,
                                    args.batch_size, cfg.seed, grad_accum=cfg.grad_accum, device=cfg.device)
    note(f"longer than {limit} tokens: truncated", truncated)
    tr, te = len(task.train_ids), len(task.val_ids)
    return train_and_summarise(
        task, model, cfg, run,
        f"fine-tuning {{params}} parameters on {tr} sentences ({te} held out), labels {labels} -> {run}",
        lambda ev: f"held-out accuracy {ev['val_accuracy']:.4f} on {ev['val_examples']} sentences",
    )


def _load_classifier(args: argparse.Namespace):  # noqa: ANN202
    from attnkit.tasks.bert import CLASSIFY_FAMILY
    from attnkit.tasks.runs import open_run

    run = open_run(args.run, family=CLASSIFY_FAMILY, dtype=args.dtype)
    dtype_note(run, args.dtype)
    return run


def _run(args: argparse.Namespace) -> int:
    classifier = _load_classifier(args).inference
    lines = stdin_lines()
    if not lines:
        raise InputError("no input lines on stdin (one sentence per line expected)")
    enc = classifier.encode(lines)
    note("empty: classified as an empty sentence", [i for i, s in enumerate(lines) if not s.strip()])
    note(f"longer than {classifier.max_length} tokens: truncated", enc.truncated)
    note("contain characters unknown to the vocabulary (read as [UNK])", enc.unknown)
    for label, prob in classifier.classify_ids(enc.ids):
        sys.stdout.write(f"{label}\t{prob:.4f}\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from attnkit.tasks.bert import evaluate_classifier

    ev = evaluate_classifier(_load_classifier(args), args.data, args.split)
    print(f"accuracy {ev.accuracy:.4f} on {ev.sentences} sentences ({args.split} split), loss {ev.loss:.4f}")
    return 0
