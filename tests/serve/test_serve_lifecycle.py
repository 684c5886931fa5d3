"""A server with an API key, an allowed CORS origin and batching off: the key is required everywhere but
/health (and the static page), compared whole; CORS answers only the configured origin; SIGTERM during
load lets every accepted request finish with its full answer, then the server exits 0 and takes no new
connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _serve import ServerProcess, sse_events

from attnkit.tasks.runs import Run

KEY = "s3cret-key"
ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def strict(serve_runs: dict[str, Path]) -> Iterator[ServerProcess]:
    proc = ServerProcess({"lm": serve_runs["lm"]}, "--no-batching", "--cors-origin", ORIGIN,
                         env={"ATTNKIT_API_KEY": KEY})
    proc._auth = {"Authorization": f"Bearer {KEY}"}
    yield proc
    proc.stop()


def test_the_api_key_is_required_but_for_health(strict: ServerProcess, server: ServerProcess) -> None:
    assert httpx.get(strict.url + "/health").status_code == 200
    assert httpx.get(strict.url + "/").status_code == 200
    for path in ("/v1/models", "/metrics", "/openapi.json"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}, {"X-API-Key": KEY + "x"}):
            got = httpx.get(strict.url + path, headers=headers)
            assert got.status_code == 401 and "API key" in got.json()["error"], (path, headers)
        assert httpx.get(strict.url + path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert httpx.get(strict.url + path, headers={"X-API-Key": KEY}).status_code == 200
    got = httpx.post(strict.url + "/v1/generate", json={"prompt": "a", "max_new_tokens": 2})
    assert got.status_code == 401
    assert httpx.get(server.url + "/v1/models").status_code == 200  # no key configured: open


def test_cors_is_closed_unless_configured(strict: ServerProcess, server: ServerProcess) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    got = httpx.options(strict.url + "/v1/generate", headers=preflight)
    assert got.status_code == 200 and got.headers["access-control-allow-origin"] == ORIGIN
    got = httpx.options(strict.url + "/v1/generate", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in got.headers
    got = httpx.get(server.url + "/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in got.headers


def test_sigterm_finishes_every_accepted_request_then_exits_0(strict: ServerProcess, local: dict[str, Run]) -> None:
    headers = {"X-API-Key": KEY}
    bodies = [{"prompt": p, "max_new_tokens": 20, "temperature": 0.9, "seed": i, "stream": i % 2 == 0}
              for i, p in enumerate(["a", "the", "big", "on", "tree", "man"] * 2)]
    first_tokens: list[float] = []

    def call(body: dict) -> tuple[int, str, float]:
        with httpx.stream("POST", strict.url + "/v1/generate", json=body, headers=headers, timeout=60) as answer:
            chunks = []
            for chunk in answer.iter_text():
                chunks.append(chunk)
                if body["stream"] and not first_tokens:
                    first_tokens.append(time.monotonic())
                    strict.proc.terminate()  # SIGTERM while this and the others are in flight or queued
            return answer.status_code, "".join(chunks), time.monotonic()

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(call, bodies))
    assert strict.proc.wait(30) == 0, "".join(strict.stderr)[-3000:]
    gen = local["lm"].inference
    assert sum(done > first_tokens[0] for _, _, done in answers) >= len(bodies) // 2  # answered after SIGTERM
    for body, (status, text, _) in zip(bodies, answers, strict=True):
        assert status == 200, text
        want = gen.generate(body["prompt"], max_new_tokens=20, temperature=0.9, seed=body["seed"])[0]
        if body["stream"]:
            events = sse_events(text)
            assert events[-1][0] == "done" and events[-1][1]["text"] == want
        else:
            assert httpx.Response(200, content=text).json()["text"] == want
    with pytest.raises(httpx.ConnectError):
        httpx.get(strict.url + "/health", timeout=5)
