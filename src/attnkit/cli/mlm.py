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

from attnkit.cli.common import note
from attnkit.cli.train_summary import train_and_summarise
from attnkit.errors import InputError
from attnkit.tasks import limits
from attnkit.training import TrainConfig, add_train_args, train_config_from_args

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


@limits.with_option_names({"vocab_size": "--vocab-size", "max_tokens": "--max-tokens", "grad_accum": "--grad-accum"})
def _train(args: argparse.Namespace) -> int:
    from attnkit.tasks.bert import prepare_mlm

    cfg = train_config_from_args(args, preset=args.preset, vocab_size=args.vocab_size, max_tokens=args.max_tokens)
    if args.max_tokens < 8:
        raise InputError(f"--max-tokens must be >= 8, got {args.max_tokens}")
    torch.manual_seed(cfg.seed)  # the initial weights
    run = Path(args.out)
    task, model, truncated = prepare_mlm(args.text, run, args.preset, args.vocab_size, args.val_fraction, cfg.seed,
                                         args.max_tokens, args.tokenizer, grad_accum=cfg.grad_accum,
                                         device=cfg.device)
    note(f"longer than the model's maximum of {task.config.max_len} tokens: truncated", truncated)
    return train_and_summarise(
        task, model, cfg, run,
        f"BERT masked LM, {{params}} parameters, vocabulary {task.config.vocab_size}, {len(task.train_ids)} "
        f"training / {len(task.val_ids)} validation lines -> {run}",
        lambda ev: f"validation loss {ev['val_loss']:.4f}, masked-token accuracy {ev['masked_accuracy']:.4f}",
    )
