"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own so that several apps (the
tests') do not share counters."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """requests (by endpoint and status), latency, batch sizes (requests per batch; rows per generation
    step), queue depth, generated tokens and their rate, cancelled requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("attnkit_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("attnkit_request_seconds", "time from request to answer", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("attnkit_batch_requests", "requests in a batch (generation: rows in a step)",
                               ["model", "kind"], buckets=BATCH_BUCKETS, registry=r)
        self.queue = Gauge("attnkit_queue_depth", "requests waiting for their model", ["model"], registry=r)
        self.active = Gauge("attnkit_generation_rows", "generation rows being decoded", ["model"], registry=r)
        self.tokens = Counter("attnkit_generated_tokens", "tokens generated", ["model"], registry=r)
        self.rate = Gauge("attnkit_tokens_per_second", "tokens generated per second over the last few seconds",
                          ["model"], registry=r)
        self.cancelled = Counter("attnkit_cancelled_requests", "requests whose client went away or that timed out",
                                 ["model"], registry=r)
        self._window: dict[str, list[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def add_tokens(self, model: str, n: int) -> None:
        """Count ``n`` tokens generated now."""
        if n <= 0:
            return
        self.tokens.labels(model).inc(n)
        with self._lock:
            self._window.setdefault(model, []).append((time.monotonic(), n))

    def text(self, window_s: float = 5.0) -> bytes:
        """The metrics in the Prometheus text format (tokens/s: over the last ``window_s`` seconds)."""
        now = time.monotonic()
        with self._lock:
            for model, seen in self._window.items():
                seen[:] = [(t, k) for t, k in seen if now - t <= window_s]
                self.rate.labels(model).set(sum(k for _, k in seen) / window_s)
        return generate_latest(self.registry)
