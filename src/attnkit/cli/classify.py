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

from attnkit.cli.embed import note, stdin_lines
from attnkit.cli.train_summary import train_and_summarise
from attnkit.errors import InputError
from attnkit.training import TrainConfig, add_train_args, latest_checkpoint, read_meta, train_config_from_args

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
    r.set_defaults(func=_run)
    e = s.add_parser("eval", help="accuracy of a fine-tuned run on labelled data")
    e.add_argument("run", help="classifier run directory")
    e.add_argument("--data", required=True, help="TSV file of label<TAB>sentence rows")
    e.add_argument("--split", choices=("test", "all"), default="test", help="held-out split or every row")
    e.set_defaults(func=_eval)


def _split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--holdout", type=float, default=0.1, help="held-out test share (default %(default)s)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")


def _init_model(init: str, n_labels: int, from_scratch: bool):  # noqa: ANN202
    """(classifier, tokenizer) initialised from a Hugging Face directory or an attnkit BERT run."""
    from attnkit.models.bert import BERTForSequenceClassification
    from attnkit.models.bert_tasks import load_run
    from attnkit.tokenizers.wordpiece import WordPiece

    path = Path(init)
    if (path / "config.json").is_file():
        model = BERTForSequenceClassification.from_hf(path, n_labels)
        tok = WordPiece.from_dir(path)
        config = model.config
    else:
        if not path.exists():
            raise InputError(f"--init {init}: no such run or Hugging Face directory")
        source, tok, _ = load_run(path)
        config = source.config
        model = BERTForSequenceClassification(config, n_labels)
        # Encoder (and pooler, if the source has one) from the run; the classifier layer is new.
        model.bert.load_state_dict(source.bert.state_dict(), strict=False)
    if from_scratch:
        model = BERTForSequenceClassification(config, n_labels)
    return model, tok


def _train(args: argparse.Namespace) -> int:
    from attnkit.data.tsv import holdout_split, read_tsv
    from attnkit.models.bert import BERTConfig, BERTForSequenceClassification
    from attnkit.models.bert_tasks import TOKENIZER_DIR, ClassifyTask
    from attnkit.tokenizers.wordpiece import WordPiece

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
        meta = read_meta(run, family="bert-classify")
        labels = meta["labels"]
        tok = WordPiece.from_dir(run / TOKENIZER_DIR)
        model = BERTForSequenceClassification(BERTConfig.from_dict(meta["model_config"]), len(labels))
    else:
        labels = sorted(set(data.labels))
        if len(labels) < 2:
            raise InputError(f"{args.data}: need at least 2 different labels, found {labels}")
        model, tok = _init_model(args.init, len(labels), args.from_scratch)
    unknown = sorted({lab for lab in data.labels if lab not in labels})
    if unknown:
        raise InputError(f"{args.data}: labels {unknown} are not among the run's labels {labels}")
    y = [labels.index(lab) for lab in data.labels]
    limit = min(args.max_length, model.config.max_positions)
    enc = tok.encode(data.sentences, max_length=limit)
    note(f"longer than {limit} tokens: truncated", [data.line_numbers[i] - 1 for i in enc.truncated])
    tr, te = holdout_split(len(data), args.holdout, args.split_seed)
    task = ClassifyTask([enc.ids[i] for i in tr], [y[i] for i in tr], [enc.ids[i] for i in te], [y[i] for i in te],
                        tok, model.config, labels, batch_size=args.batch_size, seed=cfg.seed)
    return train_and_summarise(
        task, model, cfg, run,
        f"fine-tuning {{params}} parameters on {len(tr)} sentences ({len(te)} held out), labels {labels} -> {run}",
        lambda ev: f"held-out accuracy {ev['val_accuracy']:.4f} on {ev['val_examples']} sentences",
    )


def _load_classifier(run: str):  # noqa: ANN202
    from attnkit.models.bert_tasks import load_run
    from attnkit.training import read_meta

    read_meta(run, family="bert-classify")  # a clear error for another kind of run
    return load_run(run)


def _run(args: argparse.Namespace) -> int:
    model, tok, meta = _load_classifier(args.run)
    lines = stdin_lines()
    if not lines:
        raise InputError("no input lines on stdin (one sentence per line expected)")
    limit = min(int(meta["train_config"]["extra"].get("max_length", 128)), model.config.max_positions)
    enc = tok.encode(lines, max_length=limit)
    note("empty: classified as an empty sentence", [i for i, s in enumerate(lines) if not s.strip()])
    note(f"longer than {limit} tokens: truncated", enc.truncated)
    note("contain characters unknown to the vocabulary (read as [UNK])", enc.unknown)
    labels = meta["labels"]
    with torch.inference_mode():
        for s in range(0, len(enc.ids), 64):
            x, attn = tok.pad(enc.ids[s : s + 64])
            probs = model(x, attn).logits.float().softmax(-1)  # (b, C)
            for p in probs:
                k = int(p.argmax())
                sys.stdout.write(f"{labels[k]}\t{float(p[k]):.4f}\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from attnkit.data.tsv import holdout_split, read_tsv
    from attnkit.evaluation.accuracy import accuracy
    from attnkit.models.bert_tasks import predict

    model, tok, meta = _load_classifier(args.run)
    extra = meta["train_config"]["extra"]
    data = read_tsv(args.data)
    labels = meta["labels"]
    bad = [f"line {n}: {lab!r}" for lab, n in zip(data.labels, data.line_numbers, strict=True) if lab not in labels]
    if bad:
        raise InputError(f"{args.data}: labels unknown to the model {labels}: " + "; ".join(bad[:5]))
    if args.split == "test":
        _, idx = holdout_split(len(data), float(extra.get("holdout", 0.1)), int(extra.get("split_seed", 0)))
        data = data.subset(idx)
        if len(data) == 0:
            raise InputError(f"{args.data}: the held-out test split is empty (too few rows); use --split all")
    limit = min(int(extra.get("max_length", 128)), model.config.max_positions)
    ids = tok.encode(data.sentences, max_length=limit).ids
    y = [labels.index(lab) for lab in data.labels]
    preds, loss = predict(model, tok, ids, 64, y)
    print(f"accuracy {accuracy(preds, y):.4f} on {len(y)} sentences ({args.split} split), loss {loss:.4f}")
    return 0
