"""CTranslate2 as the second peer of the pretrained-model benchmarks (bench/pretrained_speed.py,
bench/llama_generate.py): the machine line, the official converter on a ``save_pretrained`` directory, and
the report of every repeat, the medians and the ratios."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
         "amx_bf16", "amx_int8")


def machine() -> str:
    """One line: the CPU model, the flags the products use, the core count, torch's and CTranslate2's versions
    and CTranslate2's compute types on this CPU."""
    import ctranslate2
    import torch

    cpu, flags = platform.processor() or "?", []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        have = set(next(line for line in lines if line.startswith("flags")).split(":", 1)[1].split())
        flags = [f for f in FLAGS if f in have]
    except (OSError, StopIteration):
        pass
    return (f"machine: {cpu}, {os.cpu_count()} cores; flags {' '.join(flags)}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), CTranslate2 {ctranslate2.__version__} (compute types "
            f"{', '.join(sorted(ctranslate2.get_supported_compute_types('cpu')))})")


def convert(hf_dir: Path, out: Path, quantization: str | None = None) -> Path:
    """``hf_dir`` (a transformers ``save_pretrained`` directory with its tokenizer) through CTranslate2's own
    converter into ``out``: fp32 weights, or ``quantization`` ("int8")."""
    import ctranslate2

    ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(out), quantization=quantization, force=True)
    return out


def report(name: str, unit: str, runs: dict[str, list[float]], pairs: list[tuple[str, str]]) -> dict:
    """Print every repeat of every side (higher is better), the medians and, for each (ours, peer) pair, the
    ratio of the medians and the median of the paired repeats' ratios (> 1: ours faster)."""
    print(f"  {name} ({unit}, higher is better)", flush=True)
    for side, vals in runs.items():
        print(f"    {side:>13}: " + "  ".join(f"{v:8.2f}" for v in vals) + f"   median {statistics.median(vals):8.2f}")
    med = {side: statistics.median(v) for side, v in runs.items()}
    ratios = {}
    for a, b in pairs:
        paired = statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))
        ratios[f"{a} / {b}"] = {"of_medians": med[a] / med[b], "median_paired": paired}
        print(f"    ratio {a + ' / ' + b:>29}: {med[a] / med[b]:.2f} (median of paired repeats {paired:.2f})")
    return {"runs": runs, "median": med, "ratios": ratios}


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> tuple[float, float]:
    """(share of identical outputs, share of equal tokens position by position) of two token lists."""
    same = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(ours)
    equal = sum(sum(i == j for i, j in zip(a, b, strict=False)) for a, b in zip(ours, theirs, strict=True))
    return same, equal / max(sum(max(len(a), len(b)) for a, b in zip(ours, theirs, strict=True)), 1)


def rate(count: int, fn: Callable[[], object]) -> Callable[[int], float]:
    """A runner for ``_timing.interleaved``: ``count`` items per second of one call of ``fn``."""
    def run(_round: int) -> float:
        t0 = time.perf_counter()
        fn()
        return count / (time.perf_counter() - t0)
    return run
