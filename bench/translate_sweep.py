"""Lever sweep for translation quality per CPU-hour (issue 20): one 60-minute run per variant, one table.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/translate_sweep.py --out-root /work/runs/sweep \\
        --minutes 60 --variant "marian-dropout=--attn-dropout 0 --activation-dropout 0" \\
        --variant "dropout-0.2=--dropout 0.2 --attn-dropout 0 --activation-dropout 0"
    .venv/bin/python bench/translate_sweep.py --table /work/runs/deen60c /work/runs/sweep/*   # table only

Each ``--variant NAME=FLAGS`` runs ``bench/translate_quality.py --out OUT_ROOT/NAME --minutes M`` with the
variant's ``attnkit translate train`` flags after ``--`` (on top of the benchmark's recipe), one after the
other (each needs the whole machine: run the sweep under the lock, on a quiet machine). ``--table RUN ...``
only reads finished runs. The table: the settings that differ from attnkit's defaults (read from each run's
``config.json`` and ``train_config.json``, so a run made by hand fits in too), steps, mean target tokens/s,
the last and the best validation BLEU (greedy, first 300 validation sentences), test_2016_flickr BLEU greedy
and beam 5, and the CPU: rows from different CPUs are not comparable (the step rate differs).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnkit.models.transformer import TransformerConfig  # noqa: E402
from attnkit.training import TrainConfig  # noqa: E402


def settings(run: Path) -> str:
    """The run's model shape and training recipe in one line (from config.json, train_config.json and
    run.json)."""
    m = TransformerConfig.load(run / "config.json")
    t = TrainConfig.load(run / "train_config.json")
    extra = t.extra or {}
    drop = [m.dropout, m.attn_dropout, m.activation_dropout]
    drop = "/".join(str(m.dropout if d is None else d) for d in drop)
    vocab = f"{m.src_vocab_size}{' joint' if m.share_embeddings else ' per language'}"
    run_meta = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    if run_meta.get("bpe_dropout"):
        vocab += f", BPE-dropout {run_meta['bpe_dropout']:g}"
    decay = f"{t.schedule}{' to the deadline' if t.decay_to == 'time' else ''}"
    return (f"d {m.d_model}, {m.n_heads} heads, FFN {m.d_ff}, {m.n_encoder_layers}+{m.n_decoder_layers} layers, "
            f"{m.activation}, dropout/attn/act {drop}; BPE {vocab}; {extra.get('max_tokens', '?')}-token batches, "
            f"lr {t.lr:g}, warm-up {t.warmup}, {decay}, label smoothing {extra.get('label_smoothing', '?')}, "
            f"{t.precision}")


def row(run: Path) -> dict:
    """One table row from a finished run of bench/translate_quality.py (its results.json)."""
    res = json.loads((run / "results.json").read_text())
    curve = res.get("curve", [])
    average = res.get("average_last")
    shown = settings(run) + ("" if average is None else f", average of the last {average}")
    return {"run": run.name, "settings": shown, "steps": res.get("steps"),
            "tokens_per_s": res.get("train_tokens_per_s_mean"),
            "val_last": curve[-1]["val_bleu_greedy"] if curve else None,
            "val_best": max((r["val_bleu_greedy"] for r in curve), default=None),
            "greedy": res["scores"]["greedy"]["bleu"], "beam5": res["scores"]["beam5"]["bleu"],
            "lp": res.get("length_penalty"), "cpu": res.get("machine", {}).get("cpu", "?"),
            "pair": res.get("pair")}


def _f(v: object, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    """A markdown table of the rows."""
    lines = ["| run | pair | settings | steps | tokens/s | val BLEU last / best | test greedy | test beam 5 (lp) "
             "| CPU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['pair']} | {r['settings']} | {_f(r['steps'], 'd')} | "
                     f"{_f(r['tokens_per_s'], '.0f')} | {_f(r['val_last'], '.2f')} / {_f(r['val_best'], '.2f')} | "
                     f"{r['greedy']:.2f} | {r['beam5']:.2f} ({_f(r['lp'], '.1f')}) | {r['cpu']} |")
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition("=")
    if not sep or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"--variant wants NAME=FLAGS (a name without '/'), got {text!r}")
    return name, shlex.split(flags)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", nargs="+", type=Path, metavar="RUN", help="only print the table of these runs")
    p.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="NAME=FLAGS")
    p.add_argument("--out-root", type=Path, help="the variants' run directories go here (outside the repository)")
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    args = p.parse_args()
    if args.table:
        runs = list(args.table)
    else:
        if not args.variant or args.out_root is None:
            p.error("give --variant NAME=FLAGS (one or more) and --out-root, or --table RUN ...")
        runs = []
        for name, flags in args.variant:
            out = args.out_root / name
            cmd = [sys.executable, str(ROOT / "bench" / "translate_quality.py"), "--out", str(out), "--minutes",
                   str(args.minutes), "--src", args.src, "--tgt", args.tgt, "--", *flags]
            print("sweep: " + shlex.join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            runs.append(out)
    missing = [str(r) for r in runs if not (r / "results.json").is_file()]
    if missing:
        p.error(f"no results.json in {', '.join(missing)} (not a finished bench/translate_quality.py run)")
    print(table([row(r) for r in runs]))


if __name__ == "__main__":
    main()
