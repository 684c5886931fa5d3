"""Translation quality benchmark: train on Multi30k for a fixed wall-clock budget, then sacreBLEU.

    .venv/bin/python bench/translate_quality.py --out /work/runs/deen60 --minutes 60 --src de --tgt en
    .venv/bin/python bench/translate_quality.py --out /work/runs/deen60 --skip-train     # evaluate only

Trains with ``attnkit translate train`` (the same code path as the CLI; resumes if --out holds a
checkpoint) for at most ``--minutes`` of wall clock (tokenizer training included), averages the last
checkpoints, then reports sacreBLEU (cased, detokenized, 13a) and chrF on test_2016_flickr with greedy
decoding and beam 5 (length penalty chosen on the validation set), and the validation BLEU of every
evaluation against wall time (from metrics.jsonl). Writes ``--out/results.json``. The peer figure is the
known result of Hugging Face MarianMTModel (8.2M parameters) trained 60 minutes on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# On a shared 2-core machine, spinning OpenMP threads collapse throughput (measured 6x slower when another
# process is busy); passive waiting keeps 2 threads as fast as 1 when contended and 2x when not.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnkit.cli.main import main as attnkit_main  # noqa: E402
from attnkit.data.parallel import read_parallel  # noqa: E402
from attnkit.evaluation.bleu import corpus_scores  # noqa: E402
from attnkit.models import num_parameters  # noqa: E402
from attnkit.tasks.runs import open_run  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "multi30k"
PEER = {"name": "HF MarianMTModel 8.2M, 60 min, same machine (de->en)", "greedy": 33.4, "beam5": 36.6}
FLOOR = 35.0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory (outside the repository)")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of the training")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--lp", type=float, nargs="+", default=[0.6, 1.0, 1.4], help="length penalties tried on val")
    p.add_argument("--val-n", type=int, default=500, help="validation sentences for choosing the length penalty")
    p.add_argument("--test-n", type=int, help="only the first N test sentences (smoke tests)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="extra `translate train` flags after --")
    return p.parse_args()


DEFAULT_TRAIN = [
    "--preset", "small", "--d-model", "256", "--heads", "4", "--d-ff", "1024", "--layers", "3",
    "--dropout", "0.1", "--vocab-size", "8000", "--max-tokens", "2048", "--label-smoothing", "0.1",
    "--lr", "1e-3", "--warmup", "500", "--schedule", "inverse_sqrt", "--clip", "1.0",
    "--precision", "bf16", "--eval-every", "500", "--val-bleu-n", "300", "--ckpt-every", "150", "--keep", "5",
    "--average-last", "4", "--log-every", "50", "--steps", "1000000", "--quiet",
]


def train(args: argparse.Namespace, started: float) -> None:
    extra = [a for a in args.train_args if a != "--"]
    budget = args.minutes * 60 - (time.monotonic() - started) - 90  # the tokenizer, final save and averaging
    argv = ["translate", "train", "--data", args.data, "--src", args.src, "--tgt", args.tgt, "--out", args.out,
            *DEFAULT_TRAIN, "--time-limit", str(max(budget, 60)), *extra]
    print("training: attnkit " + " ".join(argv), flush=True)
    code = attnkit_main(argv)
    if code:
        raise SystemExit(f"training failed with exit code {code}")


def eval_curve(run: Path) -> list[dict]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "eval" and "val_bleu_greedy" in rec:
            rows.append({"step": rec["step"], "minutes": rec["elapsed_s"] / 60, "val_loss": rec["val_loss"],
                         "val_bleu_greedy": rec["val_bleu_greedy"]})
    return rows


def train_speed(run: Path) -> float:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in recs if r.get("kind") == "train"]
    return sum(speeds) / max(len(speeds), 1)


def evaluate(args: argparse.Namespace) -> dict:
    run = Path(args.out)
    translator = open_run(run, family="translation").inference
    val = read_parallel(args.data, "val", args.src, args.tgt)
    test = read_parallel(args.data, "test_2016_flickr", args.src, args.tgt)
    if args.test_n:
        test.src, test.tgt = test.src[: args.test_n], test.tgt[: args.test_n]
    lp_scores = {}
    for lp in args.lp:
        hyps = translator.translate(val.src[: args.val_n], beam_size=5, length_penalty=lp)
        lp_scores[lp] = corpus_scores(hyps, val.tgt[: args.val_n]).bleu
        print(f"val[:{args.val_n}] beam 5 length penalty {lp}: BLEU {lp_scores[lp]:.2f}", flush=True)
    best_lp = max(lp_scores, key=lambda k: lp_scores[k])
    scores = {}
    for name, beam in (("greedy", 1), ("beam5", 5)):
        start = time.perf_counter()
        hyps = translator.translate(test.src, beam_size=beam, length_penalty=best_lp)
        seconds = time.perf_counter() - start
        s = corpus_scores(hyps, test.tgt)
        scores[name] = {**s.to_dict(), "seconds": seconds}
        (run / f"test_2016_flickr.{name}.{args.tgt}").write_text("".join(h + "\n" for h in hyps))
    meta = json.loads((run / "run.json").read_text())
    return {
        "pair": f"{args.src}->{args.tgt}", "run": str(run), "length_penalty": best_lp, "val_lp_bleu": lp_scores,
        "scores": scores, "curve": eval_curve(run), "train_tokens_per_s_mean": train_speed(run),
        "params": num_parameters(translator.model), "model_config": meta.get("model_config"),
        "peer": PEER, "floor": FLOOR, "torch_threads": torch.get_num_threads(),
    }


def report(res: dict) -> None:
    print("\nvalidation BLEU (greedy, first 300 val sentences) per evaluation:")
    print(f"{'step':>7} {'minutes':>8} {'val loss':>9} {'val BLEU':>9}")
    for r in res["curve"]:
        print(f"{r['step']:>7} {r['minutes']:>8.1f} {r['val_loss']:>9.3f} {r['val_bleu_greedy']:>9.2f}")
    print(f"\n{res['pair']} test_2016_flickr, sacreBLEU {res['scores']['greedy']['signature']}")
    print(f"model: {res['params'] / 1e6:.2f}M parameters; mean training speed {res['train_tokens_per_s_mean']:.0f} "
          f"target tokens/s; beam length penalty {res['length_penalty']}")
    print(f"{'decoding':<9} {'BLEU':>6} {'chrF':>6} {'peer BLEU':>10} {'ratio':>6} {'floor':>6}")
    for name in ("greedy", "beam5"):
        s = res["scores"][name]
        peer = res["peer"][name] if res["pair"] == "de->en" else float("nan")
        print(f"{name:<9} {s['bleu']:>6.2f} {s['chrf']:>6.2f} {peer:>10.1f} {s['bleu'] / peer:>6.3f} {FLOOR:>6.1f}")
    print(f"peer: {res['peer']['name']}")


def main() -> None:
    args = parse()
    started = time.monotonic()
    if not args.skip_train:
        train(args, started)
        print(f"training wall clock: {(time.monotonic() - started) / 60:.1f} min", flush=True)
    res = evaluate(args)
    res["train_wall_minutes_budget"] = args.minutes
    (Path(args.out) / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    report(res)
    print(f"\nresults: {Path(args.out) / 'results.json'}")


if __name__ == "__main__":
    main()
