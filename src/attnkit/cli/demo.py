"""`attnkit demo`: the main job on a built-in default, with no external data.

Generates a parallel corpus of dates written out in words in many formats -> ISO dates
(:mod:`attnkit.data.dates`), trains a small Transformer on it (a few minutes at most on 2 CPU cores, through
the shared training loop), prints sample translations and the exact-match accuracy on held-out dates never
seen in training, and writes a PNG of the encoder-decoder attention, which shows the alignment (each
digit of the year attends to the year's words, the month digits to the month, ...). The run directory is
a normal translation run: ``attnkit translate run DIR`` translates more dates afterwards. The task is
:func:`attnkit.tasks.demo.dates_demo`; this module prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from attnkit.models.params import num_parameters
from attnkit.tasks.demo import check_sizes, cross_attention, dates_demo, prepare_out
from attnkit.training import train
from attnkit.viz.heatmap import plot_attention


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small Transformer to translate written dates to ISO dates")
    p.add_argument("--out", default="attnkit-demo", help="run directory (default %(default)s; replaced if it "
                   "holds an earlier demo)")
    p.add_argument("--train-size", type=int, default=30000, help="training pairs (default %(default)s)")
    p.add_argument("--test-size", type=int, default=1000, help="held-out pairs (default %(default)s)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer updates (default %(default)s)")
    p.add_argument("--time-limit", type=float, default=150.0, help="training seconds at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    check_sizes(args.train_size, args.test_size, args.seed)
    out = Path(args.out)
    prepare_out(out)
    demo = dates_demo(args.train_size, args.test_size, args.steps, args.time_limit, args.seed, args.quiet)
    print(f"attnkit demo: {len(demo.train_set)} training pairs of written dates -> ISO dates, a Transformer with "
          f"{num_parameters(demo.model) / 1e6:.2f}M parameters; training for at most {args.time_limit:.0f} s ...",
          file=sys.stderr)
    torch.manual_seed(args.seed)
    result = train(demo.task, demo.model, demo.train_config, out)
    translator = demo.translator(out)
    test = demo.test
    hyps = translator.translate(test.src)
    correct = sum(h == r for h, r in zip(hyps, test.tgt, strict=True))
    accuracy = 100.0 * correct / len(test)
    print("\nsample translations (held-out dates):")
    for s, h, r in list(zip(test.src, hyps, test.tgt, strict=True))[:8]:
        print(f"  {s:<60} -> {h}  {'ok' if h == r else 'expected ' + r}")
    spelled = next((s for s in test.src if not any(c.isdigit() for c in s)), test.src[0])  # words only
    weights, src_tokens, tgt_tokens, text = cross_attention(translator, spelled)
    png = plot_attention(weights, src_tokens, tgt_tokens, out / "attention.png", f"{spelled!r} -> {text!r}")
    print(f"\nheld-out exact match: {accuracy:.1f}% ({correct}/{len(test)}) after {result.step} steps; "
          f"total time {time.monotonic() - started:.0f} s")
    print(f"encoder-decoder attention: {png}")
    print(f"translate more: echo 'the fifth of May, nineteen eighty-four' | attnkit translate run {out}")
    return 0
