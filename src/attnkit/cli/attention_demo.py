"""`attnkit attention-demo`: each scoring function of part 1 learns a toy alignment task (seconds)."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnkit.tasks import limits
from attnkit.tasks.demo import SCORES, check_alignment_args, train_alignment


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention-demo",
        help="train soft attention with each scoring function on a toy alignment task",
        description="Soft attention with each scoring function (additive, dot, scaled dot, bilinear) learns "
        "to find the value paired with a query key; prints accuracy and writes a PNG of the weights.",
    )
    p.add_argument("--out", type=Path, default=Path("attention-demo.png"), help="PNG heatmap path")
    p.add_argument("--steps", type=int, default=400, help="training steps per scoring function")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with limits.option_names({"steps": "--steps", "seed": "--seed"}):
        check_alignment_args(args.steps, args.seed)
    results = []
    print(f"{'score':<11} {'accuracy':>8} {'alignment':>9}")
    for score in SCORES:
        r = train_alignment(score, steps=args.steps, seed=args.seed)
        results.append(r)
        print(f"{score:<11} {r.accuracy:>8.3f} {r.alignment:>9.3f}", flush=True)
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.2))
    for ax, r in zip(axes, results, strict=True):
        ax.imshow(r.weights.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_title(f"{r.score} (acc {r.accuracy:.2f})")
        for (row, col), key in np.ndenumerate(r.keys.numpy()):  # each cell names its key token
            ax.text(col, row, str(key), ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(r.keys.shape[1]))
        ax.set_xlabel("key position (cells: key token)")
        ax.set_yticks(range(len(r.query)))
        ax.set_yticklabels([f"q={q}" for q in r.query.tolist()], fontsize=7)
    fig.suptitle("Soft attention weights on held-out examples: each row's mass should sit on its query key")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0
