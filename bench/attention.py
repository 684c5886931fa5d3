"""Multi-head attention: explicit path vs fast (SDPA) path vs torch.nn.MultiheadAttention.

B in {1, 8}, H = 8, head width 64 (E = 512), T in {256, 1024, 4096}, causal and not, fp32, inference
(no grad). Times are medians with the three implementations interleaved in one process (machine load hits all
alike); peak memory (the rise of the maximum resident set during one call) is measured in a fresh
subprocess per (configuration, implementation) so that it is its own. Prints best times and
the ratios; targets: fast <= 1.05x nn.MultiheadAttention's time everywhere, and at T = 4096 fast peak
memory <= 1/4 of the explicit path's.

    python bench/attention.py [--sizes 256,1024,4096] [--batches 1,8] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

IMPLS = ("explicit", "fast", "torch")


def _setup(b: int, t: int, causal: bool, device: str):
    """The three implementations as zero-argument callables on the same input, weights and mask."""
    import torch

    from attnkit.attention import MultiHeadAttention, causal_mask

    torch.manual_seed(0)
    e, h = 512, 8
    ours = MultiHeadAttention(e, h).to(device).eval()
    ref = torch.nn.MultiheadAttention(e, h, batch_first=True).to(device).eval()
    x = torch.randn(b, t, e, device=device)
    mask = ~causal_mask(t, device=device) if causal else None  # PyTorch: True = may not attend
    return {
        "explicit": lambda: ours(x, causal=causal, need_weights=True).output,
        "fast": lambda: ours(x, causal=causal).output,
        "torch": lambda: ref(x, x, x, need_weights=False, attn_mask=mask, is_causal=causal)[0],
    }


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_child(impl: str, b: int, t: int, causal: bool, device: str) -> None:
    """Peak extra memory of one call, in a fresh process (so earlier allocations do not hide it)."""
    import resource

    import torch

    call = _setup(b, t, causal, device)[impl]
    with torch.inference_mode():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        call()
        _sync(device)
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"peak_bytes": peak}))


def _times(b: int, t: int, causal: bool, repeats: int, device: str) -> dict[str, float]:
    """Best (minimum) wall seconds per call over the repeats; the implementations are interleaved so
    that machine load hits all alike, and the minimum is the run least disturbed by neighbours (as
    timeit recommends: on these shared machines medians mostly measure the other processes)."""
    clock = time.perf_counter
    import torch

    calls = _setup(b, t, causal, device)
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for call in calls.values():  # warm-up
            call()
        for _ in range(repeats):
            for name, call in calls.items():
                _sync(device)
                t0 = clock()
                call()
                _sync(device)
                times[name].append(clock() - t0)
    return {k: min(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,1024,4096")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, b, t, causal, _ = args.child
        _peak_child(impl, int(b), int(t), causal == "1", args.device)
        return
    print(f"torch {__import__('torch').__version__}, device {args.device}, threads "
          f"{__import__('torch').get_num_threads()}")
    print(f"{'B':>2} {'T':>5} {'causal':>6} | {'explicit ms':>11} {'fast ms':>11} {'torch ms':>12} | "
          f"{'fast/torch':>10} | {'expl MB':>8} {'fast MB':>8} {'torch MB':>8} | {'fast/expl mem':>13}")
    rows = []
    for b in map(int, args.batches.split(",")):
        for t in map(int, args.sizes.split(",")):
            for causal in (False, True):
                mb = {}
                for impl in IMPLS:
                    cmd = [sys.executable, __file__, "--device", args.device,
                           "--child", impl, str(b), str(t), "1" if causal else "0", "x"]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                    mb[impl] = max(json.loads(out.strip().splitlines()[-1])["peak_bytes"], 0) / 2**20
                ms = {k: v * 1e3 for k, v in _times(b, t, causal, args.repeats, args.device).items()}
                row = {"B": b, "T": t, "causal": causal, "ms": ms, "peak_mb": mb,
                       "fast_over_torch": ms["fast"] / ms["torch"],
                       "fast_over_explicit_mem": mb["fast"] / max(mb["explicit"], 1e-9)}
                rows.append(row)
                print(f"{b:>2} {t:>5} {causal!s:>6} | {ms['explicit']:>11.2f} {ms['fast']:>11.2f} {ms['torch']:>12.2f}"
                      f" | {row['fast_over_torch']:>10.3f} | {mb['explicit']:>8.1f} {mb['fast']:>8.1f} "
                      f"{mb['torch']:>8.1f} | {row['fast_over_explicit_mem']:>13.3f}", flush=True)
    worst = max(r["fast_over_torch"] for r in rows)
    big = [r["fast_over_explicit_mem"] for r in rows if r["T"] == max(int(s) for s in args.sizes.split(","))]
    print(f"worst fast/torch time ratio: {worst:.3f} (target <= 1.05)")
    if big:
        print(f"largest-T fast/explicit peak-memory ratio: max {max(big):.3f} (target <= 0.25)")


if __name__ == "__main__":
    main()
