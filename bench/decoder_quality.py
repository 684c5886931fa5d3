"""Quality at equal wall-clock budget: a GPT-2-style and a Llama-style decoder of the same size on Tiny
Shakespeare (characters), trained side by side.

GPT-2 style: the ``shakespeare-char`` preset (nanoGPT's CPU model: 4 layers, 4 heads, 128 wide, context 64,
LayerNorm, GELU, learned positions, no biases). Llama style: ``llama-tiny`` (the same sizes and parameter
count: RMSNorm, SwiGLU d_ff 384, RoPE, 2 KV heads for the 4 query heads, no biases). Both train with
``attnkit lm train`` (AdamW, the same recipe: lr 1e-3 after 100 warm-up steps, constant: a time budget
leaves no step count for a decay to aim at; batch 12, clip 1) for the same ``--time-limit``, in two
processes at once with one thread each, so that they share the machine's load alike. Validation loss
(nats per character, the last 10% of the text, ``--eval-batches`` batches of 64 blocks) every
``--eval-every`` steps; the curves against elapsed seconds go to a PNG, the numbers to JSON.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/decoder_quality.py --budget 300 --out /tmp/dq \\
        --png docs/decoder-quality.png --json docs/decoder-quality.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attnkit.models.gpt import GPT, GPTConfig  # noqa: E402

TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
MODELS = {"GPT-2 style (shakespeare-char)": "shakespeare-char", "Llama style (llama-tiny)": "llama-tiny"}


def curves(run: Path) -> tuple[list[float], list[float], list[int], list[float]]:
    """(elapsed seconds, validation loss, step) of every evaluation, and the training losses."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    return ([r["elapsed_s"] for r in evals], [r["val_loss"] for r in evals], [r["step"] for r in evals],
            [r["loss"] for r in recs if r["kind"] == "train"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of training per model")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--text", default=str(TEXT))
    ap.add_argument("--out", required=True, help="directory for the two runs (replaced)")
    ap.add_argument("--png")
    ap.add_argument("--json")
    args = ap.parse_args()
    out = Path(args.out)
    procs = {}
    for label, preset in MODELS.items():
        run = out / preset
        if run.exists():
            subprocess.run(["rm", "-rf", str(run)], check=True)
        cmd = [sys.executable, "-m", "attnkit", "lm", "train", "--text", args.text, "--out", str(run), "--preset",
               preset, "--steps", "1000000", "--schedule", "constant", "--warmup", "100", "--lr", "1e-3",
               "--time-limit", str(args.budget), "--eval-every", str(args.eval_every), "--eval-batches",
               str(args.eval_batches), "--ckpt-every", "0", "--threads", "1", "--quiet", "--seed", "0"]
        procs[label] = (run, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for label, (run, proc) in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{label} failed:\n{stderr[-3000:]}")
        elapsed, val, steps, train = curves(run)
        params = GPT(GPTConfig.preset(MODELS[label], vocab_size=65)).num_parameters()
        results[label] = {"preset": MODELS[label], "parameters": params, "elapsed_s": elapsed, "val_loss": val,
                          "steps": steps, "final": json.loads(stdout.strip().splitlines()[-1])}
        print(f"{label}: {params} parameters, {steps[-1]} steps in {elapsed[-1]:.0f} s, validation loss "
              f"{val[-1]:.4f} (best {min(val):.4f}); every evaluation: "
              + ", ".join(f"{s}:{v:.3f}" for s, v in zip(steps, val, strict=True)), flush=True)
    labels = list(results)
    a, b = (results[k]["val_loss"][-1] for k in labels)
    print(f"final validation loss: {labels[0]} {a:.4f}, {labels[1]} {b:.4f} (difference {a - b:+.4f} nats/char)")
    if args.png:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for label, r in results.items():
            ax.plot(r["elapsed_s"], r["val_loss"], marker="o", markersize=3,
                    label=f"{label}, {r['parameters']:,} params")
        ax.set_xlabel("training time (s, one thread each, run side by side)")
        ax.set_ylabel("validation loss (nats / char)")
        ax.set_title(f"Tiny Shakespeare, characters: equal budget of {args.budget:.0f} s")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
    if args.json:
        Path(args.json).write_text(json.dumps({"budget_s": args.budget, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
