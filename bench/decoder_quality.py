"""Quality at equal wall-clock budget: a GPT-2-style and a Llama-style decoder of the same size, trained
with the same recipe and the same token batches for the same number of seconds, on Tiny Shakespeare
(characters, ``--corpus chars``) or on English sentences with a byte-level BPE (``--corpus words``).

GPT-2 style: the ``shakespeare-char`` preset (nanoGPT's CPU model: 4 layers, 4 heads, 128 wide, context 64,
LayerNorm, GELU, learned positions, no biases). Llama style: ``llama-tiny`` (the same sizes and parameter
count but the 64 x 128 position table: RMSNorm, SwiGLU d_ff 384, RoPE, 2 KV heads for the 4 query heads,
no biases). Both train with ``attnkit lm train``'s loop and recipe (AdamW (0.9, 0.99), weight decay 0.1,
lr 1e-3 after 100 warm-up steps, constant: a time budget leaves no step count for a decay to aim at;
batch 12 blocks, clip 1) for the same budget, from the same seed, so both see the same batches.
Validation loss (nats per token) every ``--eval-every`` steps; the curves against elapsed seconds go to a
PNG, the numbers to JSON.

chars: Tiny Shakespeare, the last 10% held out (``--eval-batches`` batches of 64 blocks of it); the two
models train at the same time in two ``attnkit lm train`` processes with one thread each, so that they
share the machine's load alike:

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/decoder_quality.py --budget 300 --out /tmp/dq \\
        --png docs/decoder-quality.png --json docs/decoder-quality.json

words: training text = the English side of Multi30k's train split + 90% of SST-2's sentences; validation
= Multi30k's val English + the other 10% of SST-2's sentences, minus any line that also occurs in the
training text. SST-2's train.tsv holds 67k phrases cut from about 6.9k sentences; its "sentences" here are
the phrases that are not a span of words of a longer one, and only they are used (no phrase rows), so no
held-out sentence occurs in the training text, even inside a longer line. A byte-level BPE
(``--bpe-vocab``) is trained on the training text only. The whole validation text is evaluated, and its
loss is also given per byte and per (whitespace-separated) word, which compare across tokenizers. Both
models train at once in two processes with one thread each (as for chars; ``--only PRESET`` trains one,
with ``--threads``), then the runs of every seed found in ``--out`` are reported (``--report`` reports
without training):

    for s in 0 1; do flock /tmp/attnkit-heavy.lock .venv/bin/python bench/decoder_quality.py --corpus words \\
        --budget 360 --eval-every 150 --seed $s --out /tmp/dqw; done
    .venv/bin/python bench/decoder_quality.py --corpus words --report --out /tmp/dqw \\
        --png docs/decoder-quality-words.png --json docs/decoder-quality-words.json

(``--seed``: both models of a seed go to ``OUT/seed<N>``; ``--report`` plots every seed it finds.)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from attnkit.cli.lm import TRAIN_DEFAULTS  # noqa: E402
from attnkit.data.lines import read_lines  # noqa: E402
from attnkit.data.text import to_array  # noqa: E402
from attnkit.data.tsv import read_tsv  # noqa: E402
from attnkit.models.gpt import GPT, GPTConfig  # noqa: E402
from attnkit.tasks.lm import LMTask, check_training_memory  # noqa: E402
from attnkit.tokenizers.bytebpe import train_bytebpe  # noqa: E402
from attnkit.training import train  # noqa: E402
from attnkit.training.optim import fused_adamw  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEXT = DATA / "tinyshakespeare" / "input.txt"
MODELS = {"GPT-2 style (shakespeare-char)": "shakespeare-char", "Llama style (llama-tiny)": "llama-tiny"}
BATCH = 12


def curves(run: Path) -> tuple[list[float], list[float], list[int], list[float]]:
    """(elapsed seconds, validation loss, step) of every evaluation, and the training losses."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    return ([r["elapsed_s"] for r in evals], [r["val_loss"] for r in evals], [r["step"] for r in evals],
            [r["loss"] for r in recs if r["kind"] == "train"])


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------------------ chars
def run_chars(args: argparse.Namespace) -> dict:
    """Both models at once, each in its own `attnkit lm train` process with one thread."""
    out = Path(args.out)
    procs = {}
    for label, preset in MODELS.items():
        run = out / preset
        shutil.rmtree(run, ignore_errors=True)
        cmd = [sys.executable, "-m", "attnkit", "lm", "train", "--text", args.text, "--out", str(run), "--preset",
               preset, "--steps", "1000000", "--schedule", "constant", "--warmup", "100", "--lr", "1e-3",
               "--time-limit", str(args.budget), "--eval-every", str(args.eval_every), "--eval-batches",
               str(args.eval_batches), "--ckpt-every", "0", "--threads", "1", "--quiet", "--seed", str(args.seed)]
        procs[label] = (run, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for label, (run, proc) in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{label} failed:\n{stderr[-3000:]}")
        elapsed, val, steps, _ = curves(run)
        params = GPT(GPTConfig.preset(MODELS[label], vocab_size=65)).num_parameters()
        results[label] = {"preset": MODELS[label], "parameters": params, "elapsed_s": elapsed, "val_loss": val,
                          "steps": steps, "final": json.loads(stdout.strip().splitlines()[-1])}
    return results


# ------------------------------------------------------------------------------------------ words
def sentences_of_phrases(phrases: list[str]) -> list[str]:
    """The phrases (whitespace normalised, duplicates dropped, first-seen order) that are not a contiguous
    span of words of a longer phrase: SST-2's sentences among its sub-phrases."""
    unique = list(dict.fromkeys(" ".join(p.split()) for p in phrases if p.strip()))
    covered: set[str] = set()
    for p in sorted(unique, key=lambda s: (-len(s.split()), s)):
        if p in covered:
            continue
        w = p.split()
        covered.update(" ".join(w[i:j]) for i in range(len(w)) for j in range(i + 1, len(w) + 1) if j - i < len(w))
    return [p for p in unique if p not in covered]


def word_corpus(data: Path, seed: int = 0) -> tuple[list[str], list[str], dict]:
    """(training lines, validation lines, counts): Multi30k train English + 90% of SST-2's sentences;
    Multi30k val English + the other 10% (a permutation seeded with ``seed``), minus lines also in training."""
    m_train, m_val = read_lines(data / "multi30k" / "train.en.gz"), read_lines(data / "multi30k" / "val.en.gz")
    sst = sentences_of_phrases(read_tsv(data / "sst2" / "train.tsv").sentences)
    perm = np.random.default_rng(seed).permutation(len(sst))
    held = set(perm[: len(sst) // 10].tolist())
    s_train = [s for i, s in enumerate(sst) if i not in held]
    s_val = [s for i, s in enumerate(sst) if i in held]
    train_lines = m_train + s_train
    seen = set(train_lines)
    val_lines = [s for s in m_val + s_val if s not in seen]
    counts = {"multi30k_train": len(m_train), "sst2_sentences": len(sst), "sst2_train": len(s_train),
              "multi30k_val": len(m_val), "sst2_val": len(s_val),
              "val_dropped_as_in_train": len(m_val) + len(s_val) - len(val_lines)}
    return train_lines, val_lines, counts


def words_task(args: argparse.Namespace, preset: str) -> tuple[LMTask, dict]:
    train_lines, val_lines, counts = word_corpus(DATA)
    train_text, val_text = "\n".join(train_lines) + "\n", "\n".join(val_lines) + "\n"
    tok = train_bytebpe([train_text], args.bpe_vocab)  # the training text only
    train_ids = to_array(tok.encode(train_text), tok.vocab_size)
    val_ids = to_array(tok.encode(val_text), tok.vocab_size)
    config = GPTConfig.preset(preset, vocab_size=tok.vocab_size)
    stats = {**counts, "train_tokens": len(train_ids), "val_tokens": len(val_ids),
             "val_bytes": len(val_text.encode()), "val_words": len(val_text.split()), "vocab": tok.vocab_size,
             "train_sha256": hashlib.sha256(train_ids.tobytes()).hexdigest()[:16],
             "val_sha256": hashlib.sha256(val_ids.tobytes()).hexdigest()[:16]}
    return LMTask(train_ids, val_ids, config, tok, BATCH, args.seed, eval_batches=None), stats


def train_words(args: argparse.Namespace, preset: str) -> None:
    """Train one model in this process (``attnkit lm train``'s loop and recipe); OUT/seed<N>/<preset>."""
    torch.set_num_threads(args.threads)
    run = Path(args.out) / f"seed{args.seed}" / preset
    shutil.rmtree(run, ignore_errors=True)
    task, stats = words_task(args, preset)
    cfg = dataclasses.replace(TRAIN_DEFAULTS, max_steps=10**6, schedule="constant", warmup=100, lr=1e-3,
                              time_limit_s=args.budget, eval_every=args.eval_every, ckpt_every=0, quiet=True,
                              seed=args.seed, device="cpu", extra={"batch_size": BATCH, "corpus": "words"})
    torch.manual_seed(cfg.seed)
    check_training_memory(task, cfg.grad_accum, cfg.device)
    model = GPT(task.config)
    print(f"{preset}: {model.num_parameters():,} parameters; corpus {json.dumps(stats)}", flush=True)
    before, cpu0 = load_average(), time.process_time()
    result = train(task, model, cfg, run, optimizer_factory=fused_adamw)
    info = {"preset": preset, "parameters": model.num_parameters(), "threads": args.threads,
            "side_by_side": args.paired, "budget_s": args.budget, "corpus": stats, "load_before": before,
            "load_after": load_average(), "cpu_s": time.process_time() - cpu0,
            "final": {"step": result.step, "stop": result.stop_reason, **result.eval},
            "cpu": cpu_model(), "torch": torch.__version__}
    (run / "bench.json").write_text(json.dumps(info, indent=2) + "\n")
    elapsed, val, steps, _ = curves(run)
    print(f"{preset} seed {args.seed}: {result.step} steps in {elapsed[-1]:.0f} s ({info['cpu_s']:.0f} CPU s), "
          f"load average before {before}, after {info['load_after']}; validation loss per token: "
          + ", ".join(f"{s}:{v:.3f}" for s, v in zip(steps, val, strict=True)), flush=True)


def run_words_side_by_side(args: argparse.Namespace) -> None:
    """Both models at once, each in a process of its own with one thread (as for chars)."""
    procs = []
    for preset in MODELS.values():
        cmd = [sys.executable, __file__, "--corpus", "words", "--only", preset, "--threads", "1", "--paired",
               "--budget", str(args.budget), "--eval-every", str(args.eval_every), "--bpe-vocab", str(args.bpe_vocab),
               "--seed", str(args.seed), "--out", args.out]
        procs.append((preset, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for preset, proc in procs:
        stdout, stderr = proc.communicate()
        print(stdout, end="", flush=True)
        if proc.returncode:
            raise SystemExit(f"{preset} failed:\n{stderr[-3000:]}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def gather_words(out: Path) -> dict[int, dict]:
    """{seed: {label: result}} of every seed directory holding both models."""
    seeds = {}
    for d in sorted(out.glob("seed*"), key=lambda p: int(p.name[4:])):
        if not all((d / p / "bench.json").is_file() for p in MODELS.values()):
            continue
        results = {}
        for label, preset in MODELS.items():
            info = json.loads((d / preset / "bench.json").read_text())
            elapsed, val, steps, _ = curves(d / preset)
            results[label] = {**info, "elapsed_s": elapsed, "val_loss": val, "steps": steps}
        a, b = (r["corpus"] for r in results.values())
        if (a["train_sha256"], a["val_sha256"]) != (b["train_sha256"], b["val_sha256"]):
            raise SystemExit(f"{d}: the two models were trained on different token ids")
        seeds[int(d.name[4:])] = results
    if not seeds:
        raise SystemExit(f"{out}: no seed directory holds both models' runs")
    return seeds


# ------------------------------------------------------------------------------------------ report
def summarise(results: dict, unit: str, per: dict[str, float] | None = None) -> None:
    """Print each model's curve and the final difference (also per byte/word with ``per``: units per token)."""
    for label, r in results.items():
        val, steps = r["val_loss"], r["steps"]
        print(f"{label}: {r['parameters']:,} parameters, {steps[-1]} steps in {r['elapsed_s'][-1]:.0f} s, "
              f"validation loss {val[-1]:.4f} (best {min(val):.4f}) nats/{unit}; every evaluation: "
              + ", ".join(f"{s}:{v:.3f}" for s, v in zip(steps, val, strict=True)), flush=True)
    (la, a), (lb, b) = ((k, r["val_loss"][-1]) for k, r in results.items())
    pa, pb = (r["parameters"] for r in results.values())
    print(f"parameters {pa:,} vs {pb:,} ({100 * (pa - pb) / pb:+.2f}%, "
          f"{'within' if abs(pa - pb) <= 0.02 * pb else 'NOT within'} 2%)")
    print(f"final validation loss: {la} {a:.4f}, {lb} {b:.4f} (difference {a - b:+.4f} nats/{unit})")
    for name, ratio in (per or {}).items():
        print(f"  per {name}: {a * ratio:.4f} vs {b * ratio:.4f} (difference {(a - b) * ratio:+.4f} nats/{name})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=("chars", "words"), default="chars")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of training per model")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=8, help="chars: validation batches of 64 blocks")
    ap.add_argument("--text", default=str(TEXT), help="chars: the text")
    ap.add_argument("--bpe-vocab", type=int, default=4096, help="words: byte-level BPE vocabulary size")
    ap.add_argument("--only", choices=list(MODELS.values()), help="words: train this model only")
    ap.add_argument("--report", action="store_true", help="words: merge the runs in --out (no training)")
    ap.add_argument("--threads", type=int, default=2, help="words: torch threads of the one training")
    ap.add_argument("--paired", action="store_true", help=argparse.SUPPRESS)  # the other model runs alongside
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="directory for the runs (each model's is replaced)")
    ap.add_argument("--png")
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {load_average()}; torch {torch.__version__}")
    if args.corpus == "chars":
        results = run_chars(args)
        summarise(results, "char")
        seeds = {args.seed: results}
        title = f"Tiny Shakespeare, characters: equal budget of {args.budget:.0f} s"
        record = {"budget_s": args.budget, "results": results}
        per = {}
    else:
        if args.only:
            train_words(args, args.only)
            return
        if not args.report:
            run_words_side_by_side(args)
        seeds = gather_words(Path(args.out))
        for seed, results in seeds.items():
            print(f"--- seed {seed}")
            c = next(iter(results.values()))["corpus"]
            per = {"byte": c["val_tokens"] / c["val_bytes"], "word": c["val_tokens"] / c["val_words"]}
            summarise(results, "token", per)
        first = next(iter(seeds.values()))
        budget = next(iter(first.values()))["budget_s"]
        title = f"Multi30k En + SST-2, byte-level BPE {c['vocab']}: equal budget of {budget:.0f} s"
        record = {"budget_s": budget, "corpus": c, "per_token": per, "seeds": {str(k): v for k, v in seeds.items()}}
        if len(seeds) > 1:
            diffs = [a["val_loss"][-1] - b["val_loss"][-1] for a, b in (tuple(r.values()) for r in seeds.values())]
            print(f"final difference per seed: {', '.join(f'{d:+.4f}' for d in diffs)} nats/token "
                  f"(mean {np.mean(diffs):+.4f})")
    if args.png:
        plot(seeds, title, args.corpus, per, args.png)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


def plot(seeds: dict[int, dict], title: str, corpus: str, per: dict[str, float], png: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = dict(zip(MODELS, ("tab:blue", "tab:orange"), strict=True))
    for n, (seed, results) in enumerate(seeds.items()):
        for label, r in results.items():
            name = f"{label}, {r['parameters']:,} params" + (f", seed {seed}" if len(seeds) > 1 else "")
            ax.plot(r["elapsed_s"], r["val_loss"], marker="os^"[n % 3], markersize=3, color=colors[label],
                    linestyle=("-", "--", ":")[n % 3], label=name)
    if corpus == "chars":
        ax.set_xlabel("training time (s, one thread each, run side by side)")
        ax.set_ylabel("validation loss (nats / char)")
    else:
        r = next(iter(next(iter(seeds.values())).values()))
        ax.set_xlabel("training time (s, one thread each, run side by side)" if r.get("side_by_side")
                      else f"training time (s, {r['threads']} threads, one model at a time)")
        ax.set_ylabel("validation loss (nats / token)")
        k = per["byte"]
        ax.secondary_yaxis("right", functions=(lambda x: x * k, lambda y: y / k)).set_ylabel("nats / byte")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    main()
