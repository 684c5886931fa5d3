"""Dynamic batching: one bounded queue and one worker thread per model.

The event loop only tokenizes, checks limits and queues a :class:`Job`; the model's worker thread runs it
(torch releases the GIL inside its kernels, so the loop keeps answering, ``/health`` included). The worker
forms a batch from the requests that are waiting: the oldest one waits for company (until ``wait_ms`` pass
without a new arrival, at most 4 x ``wait_ms``), then every queued request of the same kind and settings
joins it, up to ``max_texts`` texts and ``max_tokens`` tokens.
Generation is batched continuously (:mod:`attnkit.serve.continuous`): between two decoding steps the
worker lets waiting requests join the running batch and runs one batch of other work (an attention
request, a long generation that needs windows). Results go back through each job's :class:`Reply`.

A full queue raises :class:`QueueFull` (the endpoint answers 503 with Retry-After); a request whose client
went away or that timed out is marked cancelled and leaves the queue, or its generation row leaves the
batch at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from attnkit.derived import frozen_weights
from attnkit.errors import AttnkitError
from attnkit.serve.continuous import GenerationJob
from attnkit.serve.limits import BatchConfig, Limits
from attnkit.serve.metrics import Metrics
from attnkit.serve.served import Served, Work

log = logging.getLogger("attnkit.serve")
MAX_WAITS = 4  # the batch window slides with arrivals up to this many times --batch-wait-ms


class QueueFull(Exception):
    """The model's queue holds its limit of requests."""


class Stopping(Exception):
    """The server is shutting down and takes no new work."""


class Reply:
    """The way back from a worker thread to one request on the event loop: events put on an asyncio queue
    with ``call_soon_threadsafe``. ``("token", text)`` for streamed text, then ``("done", result)`` or
    ``("error", (status, message))``. ``cancelled`` is set by the request's side (client gone, timeout)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = False
        self.finished = False  # set by the request's side once it has the result

    def send(self, kind: str, value: Any) -> None:
        if self.cancelled:
            return
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            self.cancelled = True


@dataclass
class Job:
    work: Work
    reply: Reply
    model: str = ""
    arrived: float = field(default_factory=time.monotonic)


class ModelWorker:
    """The queue and the worker thread of one model."""

    def __init__(self, served: Served, limits: Limits, batch: BatchConfig, metrics: Metrics) -> None:
        self.served, self.limits, self.batch, self.metrics = served, limits, batch, metrics
        self.pending: deque[Job] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"attnkit-serve-{served.name}", daemon=True)
        self.engine = served.engine
        self.rows: dict[int, Job] = {}  # generation rows in the engine, by id of their GenerationJob

    # ------------------------------------------------------------------------------ event-loop side
    def submit(self, job: Job) -> None:
        """Queue ``job``; QueueFull when the queue is at its limit, Stopping after :meth:`stop`."""
        if isinstance(job.work.payload, GenerationJob):
            reply = job.reply
            job.work.payload.on_token = lambda text: reply.send("token", text)
            job.work.payload.cancelled = lambda: reply.cancelled
        with self.cond:
            if self.stopping:
                raise Stopping()
            self._drop_cancelled()  # requests that gave up hold no place
            if len(self.pending) >= self.limits.max_queue:
                raise QueueFull()
            self.pending.append(job)
            self.metrics.queue.labels(self.served.name).set(len(self.pending))
            self.cond.notify()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued and running, then end the thread."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout)

    # ------------------------------------------------------------------------------ worker side
    def _run(self) -> None:
        with torch.inference_mode(), frozen_weights():  # the weights never change while serving
            while True:
                with self.cond:
                    while not self.pending and not self._generating():
                        if self.stopping:
                            return
                        self.cond.wait()
                    if self.batch.enabled and not self._generating():
                        self._wait_for_company()
                    joining = self._take_joining()
                    batch = self._take_batch()
                    self.metrics.queue.labels(self.served.name).set(len(self.pending))
                if joining:
                    self._admit(joining)
                if batch:
                    self._run_batch(batch)
                if self._generating():
                    self._step()

    def _generating(self) -> bool:
        return self.engine is not None and self.engine.active > 0

    def _wait_for_company(self) -> None:
        """Let the oldest request wait for others to batch with (cond held): until ``wait_ms`` pass without a
        new arrival, so that a burst of requests (clients answered together send their next ones together,
        and the event loop parses them one by one) forms one batch instead of a small one and the rest; at
        most ``MAX_WAITS`` x ``wait_ms`` after the oldest arrived, or until a batch's worth of texts waits.
        A request alone waits ``wait_ms``."""
        wait = self.batch.wait_ms / 1000
        cap = self.pending[0].arrived + MAX_WAITS * wait
        while len(self.pending) < self.batch.max_texts and not self.stopping:
            left = min(cap, self.pending[-1].arrived + wait) - time.monotonic()
            if left <= 0:
                break
            self.cond.wait(left)

    def _drop_cancelled(self) -> None:
        if any(j.reply.cancelled for j in self.pending):
            self.pending = deque(j for j in self.pending if not j.reply.cancelled)

    def _take_joining(self) -> list[Job]:
        """The queued generation requests that join the running batch now, oldest first (cond held)."""
        self._drop_cancelled()
        if self.engine is None:
            return []
        taken: list[Job] = []
        for job in self.pending:
            if job.work.kind != "generate":
                continue
            if not self.batch.enabled and (taken or self.engine.active):
                break
            if not self.engine.fits([j.work.payload for j in taken] + [job.work.payload]):
                break  # first come, first served: a later request does not overtake one that waits for room
            taken.append(job)
        if taken:
            ids = {id(j) for j in taken}
            self.pending = deque(j for j in self.pending if id(j) not in ids)
        return taken

    def _take_batch(self) -> list[Job]:
        """The oldest queued request of other work and those of the same kind and settings that fit with it."""
        first = next((j for j in self.pending if j.work.kind != "generate"), None)
        if first is None:
            return []
        batch, texts, tokens = [first], first.work.texts, first.work.tokens
        alone = first.work.kind in ("attention", "generate-alone") or not self.batch.enabled
        if not alone:
            for job in self.pending:
                if job is first or job.work.kind != first.work.kind or job.work.key != first.work.key:
                    continue
                if texts + job.work.texts > self.batch.max_texts or tokens + job.work.tokens > self.batch.max_tokens:
                    break
                batch.append(job)
                texts, tokens = texts + job.work.texts, tokens + job.work.tokens
        ids = {id(j) for j in batch}
        self.pending = deque(j for j in self.pending if id(j) not in ids)
        return batch

    def _run_batch(self, batch: list[Job]) -> None:
        kind = batch[0].work.kind
        self.metrics.batch.labels(self.served.name, kind).observe(len(batch))
        try:
            results = self.served.run_batch(kind, [j.work.payload for j in batch], self.limits)
        except Exception as exc:
            if len(batch) > 1:  # find the request at fault: each alone
                for job in batch:
                    self._run_batch([job])
                return
            batch[0].reply.send("error", _error(exc))
            return
        for job, result in zip(batch, results, strict=True):
            job.reply.send("done", result)

    def _admit(self, joining: list[Job]) -> None:
        payloads = [j.work.payload for j in joining]
        finishers = [lambda result, job=job: self._finished(job, result) for job in joining]
        for job in joining:
            self.rows[id(job.work.payload)] = job
        try:
            self.engine.admit(payloads, finishers)
        except Exception as exc:
            for job in joining:
                self.rows.pop(id(job.work.payload), None)
                job.reply.send("error", _error(exc))

    def _finished(self, job: Job, result: Any) -> None:
        self.rows.pop(id(job.work.payload), None)
        job.reply.send("done", result)

    def _step(self) -> None:
        rows = self.engine.active
        self.metrics.batch.labels(self.served.name, "generate").observe(rows)
        self.metrics.active.labels(self.served.name).set(rows)
        try:
            made = self.engine.step()
        except Exception as exc:  # a failed step loses the batch: every row gets the error
            log.exception("generation step failed")
            for job in self.rows.values():
                job.reply.send("error", _error(exc))
            self.rows.clear()
            self.engine.rows, self.engine.session = [], None
            return
        self.metrics.add_tokens(self.served.name, made)
        self.metrics.active.labels(self.served.name).set(self.engine.active)


def _error(exc: Exception) -> tuple[int, str]:
    """(HTTP status, message) of an exception raised while running a request."""
    if isinstance(exc, AttnkitError | ValueError):
        return 422, str(exc)
    log.error("internal error", exc_info=exc)
    return 500, f"internal error: {type(exc).__name__}: {exc}"
