"""The queue limit and the per-request timeout, in this process (the app on an in-memory transport, its
model blocked on purpose so that the queue fills up and waiting requests run out of time): a full queue
answers 503 with Retry-After, a request past the timeout answers 503 and leaves the queue, and the model
serves the next request normally once it is free."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from attnkit.serve.app import create_app
from attnkit.serve.limits import BatchConfig, Limits
from attnkit.serve.served import Served
from attnkit.tasks.runs import Run


def test_full_queue_and_timeouts_answer_503_and_free_the_model(local: dict[str, Run],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real = Served.run_batch

    def blocked(self, kind, payloads, limits):  # noqa: ANN001, ANN202
        gate.wait(10)
        return real(self, kind, payloads, limits)

    monkeypatch.setattr(Served, "run_batch", blocked)
    app = create_app({"translate": local["translate"]}, Limits(max_queue=2, timeout_s=0.5), BatchConfig(enabled=False))
    body = {"texts": ["5th march 1910"]}

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, str]:
        for worker in app.state.workers.values():
            worker.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=10) as client:
            first = asyncio.ensure_future(client.post("/v1/translate", json=body))
            await asyncio.sleep(0.1)  # the worker takes it (and blocks): the next two wait in the queue
            rest = await asyncio.gather(*[client.post("/v1/translate", json=body) for _ in range(5)])
            answers = [await first, *rest]
            gate.set()
            after = await client.post("/v1/translate", json=body)
            metrics = (await client.get("/metrics")).text
        for worker in app.state.workers.values():
            worker.stop()
        return answers, after, metrics

    answers, after, metrics = asyncio.run(scenario())
    full = [a for a in answers if "queue limit" in a.json()["error"]]
    late = [a for a in answers if "took longer than this server's timeout of 0.5 s" in a.json()["error"]]
    assert len(full) == 3 and len(late) == 3, [a.json() for a in answers]
    assert all(a.status_code == 503 and a.headers["retry-after"] == "1" for a in answers)
    assert after.status_code == 200, after.text
    assert after.json()["translations"][0]["text"] == local["translate"].translate(
        body["texts"])[0]
    assert 'attnkit_cancelled_requests_total{model="translate"} 3.0' in metrics


def test_a_burst_of_requests_forms_one_batch(local: dict[str, Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests that keep arriving less than --batch-wait-ms apart wait for one another (the window slides
    with arrivals, up to 4 x the wait), so a burst longer than the wait is one batch, not a small one and the
    rest; the answers are those of each request alone."""
    sizes: list[int] = []
    real = Served.run_batch

    def recorded(self, kind, payloads, limits):  # noqa: ANN001, ANN202
        sizes.append(len(payloads))
        return real(self, kind, payloads, limits)

    monkeypatch.setattr(Served, "run_batch", recorded)
    app = create_app({"translate": local["translate"]}, Limits(), BatchConfig(wait_ms=1000))
    texts = ["5th march 1910", "october 4, 1900", "1st april 2038", "Sunday, March 21, 1948"] * 3

    async def scenario() -> list[httpx.Response]:
        for worker in app.state.workers.values():
            worker.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            # one request first, so that first-call costs (imports, lazy set-up in the event loop) do not
            # fall inside the burst: on a loaded 2-core CI machine they once opened a 0.4 s gap there
            await client.post("/v1/translate", json={"texts": [texts[0]]})
            sizes.clear()
            sent = []
            for text in texts:  # 12 requests 0.1 s apart: 1.1 s in all, longer than the 1 s wait
                sent.append(asyncio.ensure_future(client.post("/v1/translate", json={"texts": [text]})))
                await asyncio.sleep(0.1)
            answers = await asyncio.gather(*sent)
        for worker in app.state.workers.values():
            worker.stop()
        return answers

    answers = asyncio.run(scenario())
    assert sizes == [len(texts)]
    for text, answer in zip(texts, answers, strict=True):
        assert answer.json()["translations"][0]["text"] == local["translate"].translate([text])[0]
