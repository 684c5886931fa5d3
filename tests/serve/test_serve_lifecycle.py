"""A server with an API key, an allowed CORS origin and batching off: the key is required everywhere but
/health (and the static page), compared whole; CORS answers only the configured origin; SIGTERM with
requests running and queued lets every accepted request finish with its full answer, then the server
exits 0 and takes no new connection."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _serve import ServerProcess, sse_events

from attnkit.tasks.runs import Run

KEY = "s3cret-key"
ORIGIN = "http://app.example"
BLOCKER_TOKENS = 1000  # past the 24-token context: generated alone in windows, a few seconds of work


@pytest.fixture(scope="module")
def strict(serve_runs: dict[str, Path]) -> Iterator[ServerProcess]:
    proc = ServerProcess({"lm": serve_runs["lm"]}, "--no-batching", "--cors-origin", ORIGIN,
                         "--max-new-tokens", str(BLOCKER_TOKENS), env={"ATTNKIT_API_KEY": KEY})
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




def _queued(proc: ServerProcess) -> int:
    return int(proc.metric("attnkit_queue_depth", model="lm"))


def test_sigterm_finishes_every_accepted_request_then_exits_0(strict: ServerProcess, local: dict[str, Run]) -> None:
    """The signal comes once every request is accepted: one long request running, 12 (half streamed) queued
    behind it (one at a time: --no-batching). Conditions, not sleeps, order the steps, so that a slow
    machine only makes the test slower: each of the 13 then gets its full answer (== alone) after the
    signal, and the server exits 0."""
    headers = {"X-API-Key": KEY}
    blocker = {"prompt": "a", "max_new_tokens": BLOCKER_TOKENS, "temperature": 0.9, "seed": 99, "stream": False}
    bodies = [{"prompt": p, "max_new_tokens": 20, "temperature": 0.9, "seed": i, "stream": i % 2 == 0}
              for i, p in enumerate(["a", "the", "big", "on", "tree", "man"] * 2)]

    def call(body: dict) -> tuple[int, str, float]:
        with httpx.stream("POST", strict.url + "/v1/generate", json=body, headers=headers, timeout=120) as answer:
            text = "".join(answer.iter_text())
            return answer.status_code, text, time.monotonic()

    def started() -> float:  # batches of windowed generation the worker has begun
        return strict.metric("attnkit_batch_requests_count", model="lm", kind="generate-alone")

    before = started()
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        first = pool.submit(call, blocker)
        _wait(lambda: started() > before, "the worker to start the long request")
        futures = [pool.submit(call, body) for body in bodies]
        # All 12 wait in the queue (the worker is on the long request): every one has been accepted.
        _wait(lambda: _queued(strict) == len(bodies) or first.done(), "12 requests queued")
        assert not first.done(), "the long request ended before the others were queued: make it longer"
        signalled = time.monotonic()
        strict.proc.terminate()  # SIGTERM
        answers = [first.result(), *(f.result() for f in futures)]
    assert strict.proc.wait(60) == 0, "".join(strict.stderr)[-3000:]
    assert all(done > signalled for _, _, done in answers)  # every one answered after the signal
    _wait(lambda: "requests received" in "".join(strict.stderr), "the server's last line")
    received, answered = re.search(r"(\d+) requests received, (\d+) answered", "".join(strict.stderr)).groups()
    assert received == answered  # the server answered every request it read
    gen = local["lm"].inference
    for body, (status, text, _) in zip([blocker, *bodies], answers, strict=True):
        assert status == 200, text
        want = gen.generate(body["prompt"], max_new_tokens=body["max_new_tokens"], temperature=0.9,
                            seed=body["seed"])[0]
        if body["stream"]:
            events = sse_events(text)
            assert events[-1][0] == "done" and events[-1][1]["text"] == want
        else:
            assert httpx.Response(200, content=text).json()["text"] == want
    with pytest.raises(httpx.ConnectError):
        httpx.get(strict.url + "/health", timeout=5)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(0.02)
