"""What the server accepts and how it batches: two small dataclasses, set from ``attnkit serve``'s flags.

Every limit answers with a 4xx JSON error naming the limit and its value (or 503 with ``Retry-After`` for
the queue and the per-request timeout); docs/serve.md lists them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per-request limits.

    max_body_bytes: request body (413 above); body_timeout_s: time allowed to send it (408 after);
    max_texts: texts per request; max_chars: characters per text or prompt; max_new_tokens: generated tokens
    per request; max_beam: beam size (and n-best); max_attention_tokens: tokens of a text shown in
    /v1/attention; max_queue: requests waiting per model (503 above); timeout_s: a request's time from
    arrival to answer (503 after, its work cancelled)."""

    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0
    max_texts: int = 64
    max_chars: int = 4000
    max_new_tokens: int = 256
    max_beam: int = 8
    max_attention_tokens: int = 128
    max_queue: int = 256
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_texts", "max_chars", "max_new_tokens", "max_beam",
                     "max_attention_tokens", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True)
class BatchConfig:
    """Dynamic batching of one model's queue.

    enabled: False decodes one request at a time (the baseline bench/serve_load.py compares with);
    wait_ms: how long the first request of a batch waits for others; max_texts / max_tokens: texts and
    source tokens (times the beam size) of one translation / embedding / classification batch; max_rows:
    generation rows decoded together; continuous: new generation requests join a running batch at the
    next step (False: a batch of generations runs to its end before the next starts)."""

    enabled: bool = True
    wait_ms: float = 5.0
    max_texts: int = 64
    max_tokens: int = 8192
    max_rows: int = 32
    continuous: bool = True

    def __post_init__(self) -> None:
        if self.wait_ms < 0:
            raise ValueError(f"wait_ms must be >= 0, got {self.wait_ms}")
        for name in ("max_texts", "max_tokens", "max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
