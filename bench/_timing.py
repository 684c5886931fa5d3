"""Timing helpers shared by the benchmarks: interleaved rounds, so that attnkit and its peer see the same
machine (on a shared 2-core machine the background load drifts; timing one side after the other would
give one of them the quiet minutes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def interleaved(runners: dict[str, Callable[[int], T]], rounds: int) -> dict[str, list[T]]:
    """Call every runner once per round, in turn (round r calls ``runner(r)``); each runner's results in
    round order."""
    results: dict[str, list[T]] = {name: [] for name in runners}
    for r in range(rounds):
        for name, run in runners.items():
            results[name].append(run(r))
    return results


def timed(fn: Callable[[], object]) -> Callable[[int], float]:
    """A runner for :func:`interleaved` that returns the seconds of one call of ``fn``."""
    def run(_round: int) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return run


def best_time(fn: Callable[[], object], repeats: int = 5) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` (after one untimed warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
