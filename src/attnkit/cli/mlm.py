"""`attnkit mlm train`: masked-LM pre-training of a BERT from scratch on any text (one sentence per line).

    attnkit mlm train --text FILE --preset small --out RUN [--vocab-size 8000] [--steps N] ...

A WordPiece vocabulary is trained on the training lines (kept in RUN/tokenizer/); a fixed, seeded share of
the lines is held out for the validation loss and masked-token accuracy. Running the same command again
on RUN resumes exactly from its latest checkpoint (its tokenizer and model configuration are reused).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from attnkit.cli.embed import note
from attnkit.cli.train_summary import train_and_summarise
from attnkit.errors import InputError
from attnkit.training import TrainConfig, add_train_args, latest_checkpoint, read_meta, train_config_from_args

DEFAULTS = TrainConfig(max_steps=2000, lr=5e-4, warmup=200, schedule="linear", weight_decay=0.01,
                       betas=(0.9, 0.999), eps=1e-6, eval_every=500, ckpt_every=500, log_every=20)


def register(sub: argparse._SubParsersAction) -> None:
    from attnkit.models.bert import PRESETS

    p = sub.add_parser("mlm", help="BERT masked-language-model pre-training")
    s = p.add_subparsers(dest="mlm_command", metavar="SUBCOMMAND")
    s.required = True
    t = s.add_parser("train", help="pre-train a BERT with the masked-LM objective on a text file")
    t.add_argument("--text", required=True, help="UTF-8 text, one sentence per line")
    t.add_argument("--preset", default="small", choices=PRESETS, help="model size (default %(default)s)")
    t.add_argument("--out", required=True, help="run directory (resumed if it has a checkpoint)")
    t.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocabulary (default %(default)s)")
    t.add_argument("--tokenizer", default=None, help="use this tokenizer directory instead of training one")
    t.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batch (default %(default)s)")
    t.add_argument("--val-fraction", type=float, default=0.05, help="held-out share of lines (default 0.05)")
    add_train_args(t, DEFAULTS)
    t.set_defaults(func=_train)


def prepare_mlm(text: str | Path, run: Path, preset: str, vocab_size: int, val_fraction: float, seed: int,
                max_tokens: int, tokenizer: str | None = None):  # noqa: ANN201
    """(task, model) for a fresh or resumed run: tokenizer and config come from ``run`` when it has a
    checkpoint, else are trained / taken from the preset."""
    from attnkit.data.lines import read_lines
    from attnkit.data.tsv import holdout_split
    from attnkit.models.bert import BERTConfig, BERTForMaskedLM
    from attnkit.models.bert_tasks import TOKENIZER_DIR, MLMTask
    from attnkit.tokenizers.wordpiece import SPECIALS, WordPiece

    raw = read_lines(text)
    numbers = [i for i, s in enumerate(raw) if s.strip()]  # 0-based file lines of the kept sentences
    lines = [raw[i] for i in numbers]
    if len(lines) < 2:
        raise InputError(f"{text}: need at least 2 non-empty lines of text, found {len(lines)}")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    train_idx, val_idx = holdout_split(len(lines), val_fraction, seed)
    if latest_checkpoint(run) is not None:
        tok = WordPiece.from_dir(run / TOKENIZER_DIR)
        config = BERTConfig.from_dict(read_meta(run, family="bert-mlm")["model_config"])
    else:
        if vocab_size < 10:
            raise InputError(f"--vocab-size must be >= 10, got {vocab_size}")
        if tokenizer is not None:
            tok = WordPiece.from_dir(tokenizer)
        else:
            tok = WordPiece.train((lines[i] for i in train_idx), vocab_size)
            if tok.vocab_size <= len(SPECIALS):
                raise InputError(f"{text}: the training lines have no word pieces to learn (only control "
                                 "characters or whitespace?)")
        config = BERTConfig.preset(preset, vocab_size=tok.vocab_size)
    enc = tok.encode(lines, max_length=config.max_positions)
    note(f"longer than the model's maximum of {config.max_positions} tokens: truncated",
         [numbers[i] for i in enc.truncated])
    task = MLMTask([enc.ids[i] for i in train_idx], [enc.ids[i] for i in val_idx], tok, config,
                   max_tokens=max_tokens, seed=seed)
    return task, BERTForMaskedLM(config)


def _train(args: argparse.Namespace) -> int:
    cfg = train_config_from_args(args, preset=args.preset, vocab_size=args.vocab_size, max_tokens=args.max_tokens)
    if args.max_tokens < 8:
        raise InputError(f"--max-tokens must be >= 8, got {args.max_tokens}")
    torch.manual_seed(cfg.seed)  # the initial weights
    run = Path(args.out)
    task, model = prepare_mlm(args.text, run, args.preset, args.vocab_size, args.val_fraction, cfg.seed,
                              args.max_tokens, args.tokenizer)
    return train_and_summarise(
        task, model, cfg, run,
        f"BERT masked LM, {{params}} parameters, vocabulary {task.config.vocab_size}, {len(task.train_ids)} "
        f"training / {len(task.val_ids)} validation lines -> {run}",
        lambda ev: f"validation loss {ev['val_loss']:.4f}, masked-token accuracy {ev['masked_accuracy']:.4f}",
    )
