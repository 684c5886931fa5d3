"""Multi-head attention: explicit path vs fast (SDPA) path vs torch.nn.MultiheadAttention.

B in {1, 8}, H = 8, head width 64 (E = 512), T in {256, 1024, 4096}, causal and not, fp32, inference
(no grad). Each (configuration, implementation) runs in a fresh subprocess so that its peak memory (the
rise of the process's maximum resident set during the first call) is its own. Prints median times and
the ratios; targets: fast <= 1.05x nn.MultiheadAttention's time everywhere, and at T = 4096 fast peak
memory <= 1/4 of the explicit path's.

    python bench/attention.py [--sizes 256,1024,4096] [--batches 1,8] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

IMPLS = ("explicit", "fast", "torch")


def _child(impl: str, b: int, t: int, causal: bool, repeats: int, device: str) -> None:
    import resource

    import torch

    from attnkit.attention import MultiHeadAttention, causal_mask

    torch.manual_seed(0)
    e, h = 512, 8
    ours = MultiHeadAttention(e, h).to(device).eval()
    ref = torch.nn.MultiheadAttention(e, h, batch_first=True).to(device).eval()
    x = torch.randn(b, t, e, device=device)
    mask = ~causal_mask(t, device=device) if causal else None  # PyTorch: True = may not attend

    def call():
        if impl == "torch":
            return ref(x, x, x, need_weights=False, attn_mask=mask, is_causal=causal)[0]
        return ours(x, causal=causal, need_weights=impl == "explicit").output

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        call()
        sync()
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": statistics.median(times), "peak_bytes": peak}))


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
        _child(impl, int(b), int(t), causal == "1", args.repeats, args.device)
        return
    print(f"{'B':>2} {'T':>5} {'causal':>6} | {'explicit ms':>11} {'fast ms':>8} {'torch ms':>8} | "
          f"{'fast/torch':>10} | {'expl MB':>8} {'fast MB':>8} {'torch MB':>8} | {'fast/expl mem':>13}")
    rows = []
    for b in map(int, args.batches.split(",")):
        for t in map(int, args.sizes.split(",")):
            for causal in (False, True):
                res = {}
                for impl in IMPLS:
                    cmd = [sys.executable, __file__, "--repeats", str(args.repeats), "--device", args.device,
                           "--child", impl, str(b), str(t), "1" if causal else "0", "x"]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                    res[impl] = json.loads(out.strip().splitlines()[-1])
                ms = {k: v["median_s"] * 1e3 for k, v in res.items()}
                mb = {k: max(v["peak_bytes"], 0) / 2**20 for k, v in res.items()}
                row = {"B": b, "T": t, "causal": causal, "ms": ms, "peak_mb": mb,
                       "fast_over_torch": ms["fast"] / ms["torch"],
                       "fast_over_explicit_mem": mb["fast"] / max(mb["explicit"], 1e-9)}
                rows.append(row)
                print(f"{b:>2} {t:>5} {causal!s:>6} | {ms['explicit']:>11.2f} {ms['fast']:>8.2f} {ms['torch']:>8.2f}"
                      f" | {row['fast_over_torch']:>10.3f} | {mb['explicit']:>8.1f} {mb['fast']:>8.1f} "
                      f"{mb['torch']:>8.1f} | {row['fast_over_explicit_mem']:>13.3f}", flush=True)
    worst = max(r["fast_over_torch"] for r in rows)
    big = [r["fast_over_explicit_mem"] for r in rows if r["T"] == max(int(s) for s in args.sizes.split(","))]
    print(f"worst fast/torch time ratio: {worst:.3f} (target <= 1.05)")
    if big:
        print(f"largest-T fast/explicit peak-memory ratio: max {max(big):.3f} (target <= 0.25)")


if __name__ == "__main__":
    main()
