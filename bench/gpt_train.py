"""GPT training on Tiny Shakespeare with nanoGPT's CPU recipe: quality, and speed against Hugging Face.

Recipe (nanoGPT README, "I only have a macbook"): characters, 4 layers, 4 heads, 128 wide, context 64,
batch 12, 2000 iterations, lr 1e-3 with 100 warm-up steps and cosine decay to 1e-4, AdamW (0.9, 0.99),
weight decay 0.1, clip 1.0, dropout 0, 90/10 split.

1. Quality: ``attnkit lm train`` with that recipe; prints the validation loss (mean over the whole
   validation split) after 2000 iterations and the wall time, and asserts that the last in-process
   evaluation equals ``attnkit lm eval RUN --split val`` of the saved model in a fresh process (within
   1e-4; issue 13: stale derived weights once made the in-process figures wrong).
2. Speed: the same training step (forward, cross-entropy, backward, clip, AdamW step) timed on attnkit's
   GPT and on ``transformers.GPT2LMHeadModel`` with the same shapes, batches and optimizer, alternating
   rounds in this one process; tokens/s = batch x context x steps / seconds.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/gpt_train.py [--skip-quality] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

from _timing import interleaved  # bench/ is on sys.path when run as a script
from attnkit.cli.main import main as attnkit_main
from attnkit.data.text import RandomBlocks, read_text
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.tokenizers.char import train_char_tokenizer

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare" / "input.txt"
RECIPE = ["--tokenizer", "char", "--preset", "shakespeare-char", "--steps", "2000", "--lr", "1e-3", "--warmup",
          "100", "--schedule", "cosine", "--min-lr", "1e-4", "--batch-size", "12", "--weight-decay", "0.1",
          "--betas", "0.9", "0.99", "--clip", "1.0", "--dropout", "0", "--val-fraction", "0.1"]


def quality(out: Path, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    attnkit_main(["lm", "train", "--text", str(DATA), "--out", str(out), "--eval-every", "500", "--ckpt-every",
                  "1000", "--quiet", *RECIPE, *extra])
    wall = time.perf_counter() - t0
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    fresh = json.loads(subprocess.run(
        [sys.executable, "-m", "attnkit", "lm", "eval", str(out), "--text", str(DATA), "--split", "val",
         "--val-fraction", "0.1", "--json"], check=True, capture_output=True, text=True).stdout)
    in_process = evals[-1]["val_loss"]
    assert abs(fresh["loss"] - in_process) < 1e-4, (
        f"in-process val loss {in_process:.6f} != `attnkit lm eval` of the saved model {fresh['loss']:.6f}")
    return {"val_loss": in_process, "fresh_process_val_loss": fresh["loss"], "step": evals[-1]["step"],
            "wall_s": wall, "val_curve": [(r["step"], round(r["val_loss"], 4)) for r in evals]}


def _optimizer(model: torch.nn.Module, impl: str) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[impl]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), eps=1e-8, **flags)


def speed(args: argparse.Namespace) -> dict:
    text = read_text(DATA)
    tok = train_char_tokenizer(text)
    ids = torch.tensor(tok.encode(text)).numpy().astype("uint16")
    v, t, b = tok.vocab_size, 64, 12
    torch.manual_seed(0)

    def hf_model() -> torch.nn.Module:
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=v, n_positions=t, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, bos_token_id=0, eos_token_id=0))

    # name -> (model, AdamW implementation)
    models = {
        "hf, AdamW default": (hf_model(), "loop"),
        "hf, AdamW fused": (hf_model(), "fused"),
        "attnkit, AdamW fused": (GPT(GPTConfig.shakespeare_char(vocab_size=v, bias=True)), "fused"),
        "attnkit bias=False, AdamW fused": (GPT(GPTConfig.shakespeare_char(vocab_size=v, bias=False)), "fused"),
        "attnkit bias=False gelu_tanh, fused": (
            GPT(GPTConfig.shakespeare_char(vocab_size=v, bias=False, activation="gelu_tanh")), "fused"),
    }
    if args.compile:  # both sides compiled: the compiled ratio compares like with like
        models["hf compiled, AdamW fused"] = (hf_model(), "fused")
        models["attnkit bias=False compiled, fused"] = (GPT(GPTConfig.shakespeare_char(vocab_size=v)), "fused")
    runners = {}
    for name, (model, impl) in models.items():
        model.train()
        opt = _optimizer(model, impl)
        net = torch.compile(model) if "compile" in name else model
        is_hf = name.startswith("hf")

        def step(x: torch.Tensor, y: torch.Tensor, net=net, model=model, opt=opt, is_hf=is_hf) -> None:
            logits = net(input_ids=x).logits if is_hf else net(x)
            loss = F.cross_entropy(logits.reshape(-1, v), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        runners[name] = step
    blocks = RandomBlocks(ids, t, b, seed=0, epoch=0)
    for step in runners.values():  # warm-up (and compilation)
        for i in range(args.warmup):
            step(*blocks[i])
    def round_seconds(step: Callable[..., None]) -> Callable[[int], float]:
        def run(r: int) -> float:  # seconds of round r's args.steps steps
            t0 = time.perf_counter()
            for i in range(args.steps):
                step(*blocks[(r * args.steps + i) % len(blocks)])
            return time.perf_counter() - t0
        return run

    rounds = interleaved({name: round_seconds(step) for name, step in runners.items()}, args.rounds)
    seconds = {name: sum(times) for name, times in rounds.items()}
    tokens = args.rounds * args.steps * b * t
    tps = {k: tokens / s for k, s in seconds.items()}
    ratios = {k: {h: tps[k] / tps[h] for h in tps if h.startswith("hf")} for k in tps if not k.startswith("hf")}
    return {"tokens_per_s": tps, "ratios": ratios, "threads": torch.get_num_threads(),
            "steps_per_model": args.rounds * args.steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/attnkit-gpt-shakespeare", help="run directory of the quality run")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--quality-args", nargs=argparse.REMAINDER, default=[], help="extra `lm train` flags")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=25, help="steps per round and model")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also time attnkit and HF under torch.compile")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, the number of cores)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {}
    if not args.skip_speed:
        result["speed"] = speed(args)
        for name, tps in result["speed"]["tokens_per_s"].items():
            ratios = result["speed"]["ratios"].get(name, {})
            vs = "   ".join(f"{r:.2f}x [{h}]" for h, r in ratios.items())
            print(f"{name:36s} {tps:8.0f} tokens/s   {vs}", flush=True)
    if not args.skip_quality:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} exists: remove it or pass another --out (a run there would resume)")
        result["quality"] = quality(out, args.quality_args)
        q = result["quality"]
        print(f"val loss after {q['step']} iterations: {q['val_loss']:.4f} (fresh process: "
              f"{q['fresh_process_val_loss']:.4f}; {q['wall_s']:.0f} s); "
              f"curve {q['val_curve']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
