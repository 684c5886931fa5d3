"""Measurements behind docs/gpt.md's analysis of the GPT benchmarks (each prints what it measured).

    .venv/bin/python bench/gpt_probes.py peak               # fp32 GFLOPS of one core on the training shapes
    .venv/bin/python bench/gpt_probes.py layouts            # GB/s of one-row products per weight layout
    .venv/bin/python bench/gpt_probes.py train-profile      # ms/step and torch.profiler of HF vs attnkit
    .venv/bin/python bench/gpt_probes.py compile            # eager and torch.compile, both sides
    .venv/bin/python bench/gpt_probes.py estimator RUN [N]  # nanoGPT's 20-batch val estimate, N draws

Run them under ``flock /tmp/attnkit-heavy.lock``; all use 1 thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from _timing import best_time as _best  # bench/ is on sys.path when run as a script
from attnkit.evaluation.perplexity import evaluate_lm
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.tasks.runs import open_run

V, T, B = 65, 64, 12




def peak() -> None:
    for m, k, n in ((1024, 1024, 1024), (768, 128, 384), (768, 128, 512), (768, 512, 128), (128, 768, 512),
                    (512, 768, 128), (768, 128, 128)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        s = _best(lambda a=a, b=b: a @ b, 20)
        print(f"[{m},{k}] x [{k},{n}]: {2 * m * k * n / s / 1e9:.0f} GFLOPS", flush=True)


def layouts() -> None:
    copies = 24  # distinct matrices, so that nothing is read from the caches
    for o, i in ((768, 768), (2304, 768), (3072, 768), (768, 3072), (50257, 768)):
        n = 2 if o > 10000 else copies
        ws = [torch.randn(o, i) for _ in range(n)]
        wt = [w.t().contiguous() for w in ws]
        x = torch.randn(1, i)
        with torch.inference_mode():
            lin = _best(lambda ws=ws, x=x: [F.linear(x, w) for w in ws])
            mm = _best(lambda wt=wt, x=x: [x @ w for w in wt])
        mb = o * i * 4 * n / 1e6
        print(f"{o} x {i}: F.linear(x, W[out,in]) {mb / lin / 1e3:.1f} GB/s   x @ W[in,out] {mb / mm / 1e3:.1f} GB/s",
              flush=True)


def _models() -> dict:
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return {"hf": transformers.GPT2LMHeadModel(hf_cfg), "attnkit": GPT(GPTConfig.shakespeare_char(vocab_size=V))}


def _step_fn(model: torch.nn.Module, compiled: bool = False):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99), fused=True)
    net = torch.compile(model) if compiled else model
    is_hf = isinstance(model, transformers.GPT2LMHeadModel)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        logits = net(input_ids=x).logits if is_hf else net(x)
        F.cross_entropy(logits.reshape(-1, V), y.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _time_steps(runs: dict, rounds: int = 3, steps: int = 20) -> None:
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    for step in runs.values():
        for _ in range(5):
            step(x, y)
    total = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, step in runs.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step(x, y)
            total[name] += time.perf_counter() - t0
    base = total["hf"]
    for name, s in total.items():
        print(f"{name:18s} {s / (rounds * steps) * 1e3:6.2f} ms/step  {rounds * steps * B * T / s:6.0f} tokens/s  "
              f"{base / s:.2f}x HF eager", flush=True)


def train_profile() -> None:
    from torch.profiler import ProfilerActivity, profile

    runs = {k: _step_fn(m) for k, m in _models().items()}
    _time_steps(runs, rounds=4)
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    for name, step in runs.items():
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(10):
                step(x, y)
        print(f"{name}: 10 steps\n" + p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def compiled() -> None:
    eager, comp = _models(), _models()
    _time_steps({"hf": _step_fn(eager["hf"]), "attnkit": _step_fn(eager["attnkit"]),
                 "hf compiled": _step_fn(comp["hf"], True), "attnkit compiled": _step_fn(comp["attnkit"], True)})


def estimator(run: Path, draws: int) -> None:
    model = open_run(run, family="gpt").model
    val = np.load(run / "data" / "val.npy").astype(np.int64)
    t = model.config.max_len
    whole = evaluate_lm(model, val, t, 64).loss
    rng = np.random.default_rng(1234)
    ests = []
    with torch.no_grad():
        for _ in range(draws):
            starts = rng.integers(0, len(val) - t, size=20 * B)
            x = torch.from_numpy(np.stack([val[i : i + t] for i in starts]))
            y = torch.from_numpy(np.stack([val[i + 1 : i + 1 + t] for i in starts]))
            ests.append(F.cross_entropy(model(x).reshape(-1, model.config.vocab_size), y.reshape(-1)).item())
    e = np.array(ests)
    print(f"{run}: whole val {whole:.4f}; nanoGPT estimator (20 x {B} random blocks) x{draws}: mean {e.mean():.4f} "
          f"sd {e.std():.4f} min {e.min():.4f} max {e.max():.4f}; share <= 1.88: {(e <= 1.88).mean():.0%}; "
          f"share <= 1.886: {(e <= 1.886).mean():.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=("peak", "layouts", "train-profile", "compile", "estimator"))
    ap.add_argument("run", nargs="?", help="run directory (estimator)")
    ap.add_argument("draws", nargs="?", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe == "estimator":
        if not args.run:
            raise SystemExit("estimator needs a run directory")
        estimator(Path(args.run), args.draws)
    else:
        {"peak": peak, "layouts": layouts, "train-profile": train_profile, "compile": compiled}[args.probe]()


if __name__ == "__main__":
    main()
