"""Long-range dependency study (spec part 1, item 5): accuracy against distance d for CNN, LSTM, GRU, fully
connected, max-pooling, gating and self-attention classifiers with matched parameter budgets, each
trained for the same CPU time (one thread) on the synthetic ``recall`` task of attnkit.data.synthetic.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/long_range.py --out docs/long-range

writes docs/long-range.json (every run), docs/long-range.png (the plot) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from attnkit.data.synthetic import TaskSpec, generate
from attnkit.models import num_parameters
from attnkit.models.baselines import BASELINES, build_baseline

CPU = torch.device("cpu")

def budget_clock(device: torch.device):
    """CPU seconds of this process on the CPU (other jobs on a shared machine do not shrink a budget);
    wall-clock seconds on a GPU, where the work is not CPU time."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def train_eval(name: str, spec: TaskSpec, seed: int, seconds: float, batch: int, budget: int,
               n_test: int, device: torch.device = CPU) -> dict:
    """Train ``name`` for ``seconds`` (CPU time on a CPU, wall time on a GPU) on fresh batches, then test
    on ``n_test`` held-out sequences (a seed range never used for training)."""
    torch.manual_seed(seed)
    model = build_baseline(name, spec.vocab_size, spec.n_classes, spec.length, budget).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    clock = budget_clock(device)
    start, steps = clock(), 0
    while clock() - start < seconds:
        b = generate(spec, batch, seed * 1_000_003 + steps)
        loss = torch.nn.functional.cross_entropy(model(b.tokens.to(device)), b.labels.to(device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
    model.eval()
    test = generate(spec, n_test, 10**9 + seed)
    correct = 0
    with torch.no_grad():
        for i in range(0, n_test, 16):
            logits = model(test.tokens[i : i + 16].to(device))
            correct += int((logits.argmax(-1).cpu() == test.labels[i : i + 16]).sum())
    return {"model": name, "distance": spec.distance, "seed": seed, "accuracy": correct / n_test,
            "steps": steps, "examples": steps * batch, "cpu_seconds": seconds, "device": device.type,
            "parameters": num_parameters(model), "final_loss": loss.item()}


def table(runs: list[dict], distances: list[int], models: list[str]) -> str:
    head = "| model | params | " + " | ".join(f"d={d}" for d in distances) + " |"
    lines = [head, "|" + " --- |" * (len(distances) + 2)]
    for m in models:
        cells = []
        ps = [r["parameters"] for r in runs if r["model"] == m]
        params = f"{min(ps):,}" if min(ps) == max(ps) else f"{min(ps):,}-{max(ps):,}"
        for d in distances:
            accs = [r["accuracy"] for r in runs if r["model"] == m and r["distance"] == d]
            if not accs:
                cells.append("-")
            elif len(accs) == 1:
                cells.append(f"{accs[0]:.2f} (1 seed)")
            else:
                cells.append(f"{statistics.mean(accs):.2f} ({min(accs):.2f}-{max(accs):.2f})")
        lines.append(f"| {m} | {params} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], distances: list[int], models: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in models:
        xs, ys, lo, hi = [], [], [], []
        for d in distances:
            accs = [r["accuracy"] for r in runs if r["model"] == m and r["distance"] == d]
            if accs:
                xs.append(d)
                ys.append(statistics.mean(accs))
                lo.append(ys[-1] - min(accs))
                hi.append(max(accs) - ys[-1])
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=m)  # bars: min..max over seeds
    ax.set_xscale("log", base=2)
    ax.set_xticks(distances, [str(d) for d in distances])
    ax.axhline(1 / 8, color="grey", linestyle=":", label="chance (1/8)")
    ax.set_xlabel("distance d between the query and the value it asks for")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Key-value recall at distance d (same parameters, same CPU time)\nbars: min-max over seeds")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/long-range", help="path prefix of the .json and .png outputs")
    p.add_argument("--distances", default="4,16,64,256,1024")
    p.add_argument("--models", default=",".join(BASELINES))
    p.add_argument("--seeds", type=int, default=2, help="seeds for distances <= --long")
    p.add_argument("--long", type=int, default=256, help="longer distances run with --long-seeds seeds")
    p.add_argument("--long-seeds", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0, help="CPU seconds of training per run")
    p.add_argument("--long-seconds", type=float, default=40.0, help="CPU seconds per run beyond --long")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--long-batch", type=int, default=8)
    p.add_argument("--budget", type=int, default=40_000, help="parameters per model (matched within ~5%)")
    p.add_argument("--test", type=int, default=512)
    p.add_argument("--device", default="cpu", help="cpu | cuda: on cuda the budgets are wall-clock seconds")
    p.add_argument("--from-json", help="only redraw the plot and table from this results file")
    args = p.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        runs = saved["runs"]
        distances = sorted({r["distance"] for r in runs})
        models = list(dict.fromkeys(r["model"] for r in runs))
        plot(runs, distances, models, Path(args.out).with_suffix(".png"))
        print(table(runs, distances, models))
        return
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # one core: fair CPU-time budgets and room for the other jobs on the machine
    distances = [int(d) for d in args.distances.split(",")]
    models = args.models.split(",")
    runs: list[dict] = []
    for d in distances:
        long = d > args.long
        for seed in range(args.long_seeds if long else args.seeds):
            for m in models:
                r = train_eval(m, TaskSpec(distance=d), seed, args.long_seconds if long else args.seconds,
                               args.long_batch if long else args.batch, args.budget, args.test, device)
                runs.append(r)
                print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1) + "\n")
    plot(runs, distances, models, out.with_suffix(".png"))
    print(table(runs, distances, models))


if __name__ == "__main__":
    main()
