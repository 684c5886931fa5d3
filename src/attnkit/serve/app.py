"""The HTTP API of ``attnkit serve``: a FastAPI app over the loaded models' workers.

Every answer is JSON (the page, ``/metrics`` and event streams aside); every error is
``{"error": "<what is wrong>"}`` with a 4xx status (400 malformed body, 401 API key, 404 unknown model or
path, 405 method, 408 body sent too slowly, 413 body too large, 422 a field or a limit) or 503 with
``Retry-After`` (queue full, request timed out, shutting down). :class:`Guard`, a plain ASGI middleware in
front of the app, reads the body (bounded in size and time), checks the API key and counts every answer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from attnkit import __version__
from attnkit.errors import InputError
from attnkit.serve.batching import Job, ModelWorker, QueueFull, Reply, Stopping
from attnkit.serve.continuous import Generated
from attnkit.serve.limits import BatchConfig, Limits
from attnkit.serve.metrics import Metrics
from attnkit.serve.schemas import (
    AttentionRequest,
    AttentionResponse,
    ClassifyRequest,
    ClassifyResponse,
    EmbedRequest,
    EmbedResponse,
    Error,
    GenerateRequest,
    GenerateResponse,
    Health,
    ModelInfo,
    ModelsResponse,
    TranslateRequest,
    TranslateResponse,
)
from attnkit.serve.served import Incapable, Served, Work
from attnkit.tasks.lm import ChatGenerator
from attnkit.tasks.runs import Run

log = logging.getLogger("attnkit.serve")
OPEN_PATHS = ("/health", "/")  # no API key: the health check, and the page (static; it asks for the key)
ENDPOINTS = ("/", "/health", "/metrics", "/openapi.json", "/v1/models", "/v1/translate", "/v1/generate",
             "/v1/embed", "/v1/classify", "/v1/attention")
RETRY_AFTER_S = 1
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Error, "description": why} for code, why in (
    (400, "malformed JSON or invalid UTF-8"), (401, "missing or wrong API key"), (404, "unknown model"),
    (413, "body too large"), (422, "a field is missing, of the wrong type, or over a limit"),
    (503, "queue full, timed out or shutting down (see Retry-After)"))}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, {"Retry-After": str(RETRY_AFTER_S)})


class ServerState:
    """The loaded models, their workers, the limits and the metrics of one app."""

    def __init__(self, runs: dict[str, Run], limits: Limits, batch: BatchConfig) -> None:
        self.limits, self.batch, self.metrics = limits, batch, Metrics()
        self.served = {name: Served(name, run, batch) for name, run in runs.items()}
        self.workers = {name: ModelWorker(s, limits, batch, self.metrics) for name, s in self.served.items()}
        self.stopping = False
        self.received = self.answered = 0  # HTTP requests read, and answered (any status), by the Guard

    def pick(self, name: str | None, capability: str) -> Served:
        """The model ``name``, or the one loaded model that can ``capability``."""
        if name is not None:
            if name not in self.served:
                raise ApiError(404, f"unknown model {name!r}; loaded: {', '.join(self.served)}")
            return self.served[name]
        able = [s for s in self.served.values() if capability in s.capabilities]
        if len(able) != 1:
            which = ", ".join(s.name for s in able) if able else "none"
            raise ApiError(422, f"name a model: {len(able)} loaded models can {capability} ({which})")
        return able[0]

    def submit(self, name: str | None, capability: str, prepare: Callable[[Served], Work]) -> tuple[Served, Job]:
        served = self.pick(name, capability)
        try:
            work = prepare(served)
        except Incapable as exc:
            raise ApiError(422, str(exc)) from None
        except (InputError, ValueError) as exc:
            raise ApiError(422, str(exc)) from None
        job = Job(work, Reply(asyncio.get_running_loop()), served.name)
        try:
            self.workers[served.name].submit(job)
        except QueueFull:
            raise unavailable(f"model {served.name!r} has {self.limits.max_queue} requests waiting (the queue "
                              "limit); try again shortly") from None
        except Stopping:
            raise unavailable("the server is shutting down") from None
        return served, job

    async def answer(self, request: Request, job: Job) -> Any:
        """The job's result; ApiError for its error, its timeout or a client that went away."""
        left = self.limits.timeout_s - (time.monotonic() - job.arrived)
        gone = asyncio.ensure_future(client_gone(request))
        try:
            while True:
                result = asyncio.ensure_future(job.reply.events.get())
                done, _ = await asyncio.wait({result, gone}, timeout=max(left, 0.0),
                                             return_when=asyncio.FIRST_COMPLETED)
                if result not in done:
                    result.cancel()
                    self.cancel(job)
                    if gone in done:
                        raise ApiError(499, "the client closed the connection")
                    raise unavailable(f"the request took longer than this server's timeout of "
                                      f"{self.limits.timeout_s:g} s")
                kind, value = result.result()
                job.reply.finished = kind in ("done", "error")
                if kind == "done":
                    return value
                if kind == "error":
                    raise ApiError(*value)
                left = self.limits.timeout_s - (time.monotonic() - job.arrived)  # a streamed token: go on
        finally:
            gone.cancel()

    def cancel(self, job: Job) -> None:
        """Mark the job cancelled (client gone, timed out): it leaves the queue or its batch."""
        if not job.reply.cancelled and not job.reply.finished:
            job.reply.cancelled = True
            self.metrics.cancelled.labels(job.model).inc()


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def generated_json(model: str, prompt: str, g: Generated) -> dict:
    return {"model": model, "prompt": prompt, **asdict(g)}


def create_app(runs: dict[str, Run], limits: Limits | None = None, batch: BatchConfig | None = None,
               api_key: str | None = None, cors_origins: tuple[str, ...] = ()) -> Any:
    """The ASGI app serving ``runs`` (name -> Run): FastAPI inside :class:`Guard` (and CORS when
    ``cors_origins`` are given)."""
    state = ServerState(runs, limits or Limits(), batch or BatchConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for worker in state.workers.values():
            worker.start()
        yield
        state.stopping = True
        await asyncio.get_running_loop().run_in_executor(None, _stop_workers, state)
        # After the last connection closed: every request read has been answered unless these differ.
        print(f"attnkit serve: {state.received} requests received, {state.answered} answered", file=sys.stderr,
              flush=True)

    app = FastAPI(title="attnkit serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Translation, generation, embeddings, classification and attention weights of the "
                              "loaded attnkit models, with dynamic batching. Errors: {\"error\": \"...\"}.")
    app.state.attnkit = state
    _name_models_in_openapi(app, list(state.served))
    _handlers(app)
    _routes(app, state)
    guarded: Any = Guard(app, state, api_key)
    if cors_origins:
        guarded = CORSMiddleware(guarded, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                                 allow_headers=["authorization", "x-api-key", "content-type"])
    return guarded


def _name_models_in_openapi(app: FastAPI, names: list[str]) -> None:
    """The OpenAPI description lists the loaded models as the values of every request's ``model``."""
    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            for component in plain()["components"]["schemas"].values():
                field = component.get("properties", {}).get("model")
                if field is not None and component.get("title", "").endswith("Request"):
                    field.pop("anyOf", None)
                    field["anyOf"] = [{"type": "string", "enum": names}, {"type": "null"}]
        return app.openapi_schema

    app.openapi = openapi


def _stop_workers(state: ServerState) -> None:
    for worker in state.workers.values():
        worker.stop()


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            e = next(e for e in errors if e.get("type") == "json_invalid")
            return error_response(400, f"malformed JSON: {e.get('ctx', {}).get('error', e.get('msg'))}")
        return error_response(422, "; ".join(_describe(e) for e in errors[:5]))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return error_response(500, f"internal error: {type(exc).__name__}")


def _describe(e: dict) -> str:
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    where = ".".join(loc) if loc else "the body"
    msg = e.get("msg", "invalid")
    if e.get("type") == "missing":
        return f"{where}: a required field is missing"
    if e.get("type") == "extra_forbidden":
        return f"{where}: unknown field"
    return f"{where}: {msg}"


def _routes(app: FastAPI, state: ServerState) -> None:
    limits = state.limits

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("attnkit.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        return {"status": "stopping" if state.stopping else "ok", "models": len(state.served)}

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        for name, worker in state.workers.items():
            state.metrics.queue.labels(name).set(len(worker.pending))
        return Response(state.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=ModelsResponse, responses=ERRORS)
    async def models() -> dict:
        return {"models": [ModelInfo(name=s.name, family=s.run.family, source=s.run.source,
                                     capabilities=s.capabilities, max_tokens=s.max_tokens,
                                     chat_template=isinstance(s.run.inference, ChatGenerator)).model_dump()
                           for s in state.served.values()]}

    async def run(request: Request, capability: str, name: str | None, prepare: Callable[[Served], Work]) -> Any:
        _, job = state.submit(name, capability, prepare)
        return await state.answer(request, job)

    @app.post("/v1/translate", response_model=TranslateResponse, responses=ERRORS)
    async def translate(body: TranslateRequest, request: Request) -> Any:
        return await run(request, "translate", body.model, lambda s: s.prepare_translate(body, limits))

    @app.post("/v1/embed", response_model=EmbedResponse, responses=ERRORS)
    async def embed(body: EmbedRequest, request: Request) -> Any:
        return await run(request, "embed", body.model, lambda s: s.prepare_embed(body, limits))

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS)
    async def classify(body: ClassifyRequest, request: Request) -> Any:
        return await run(request, "classify", body.model, lambda s: s.prepare_classify(body, limits))

    @app.post("/v1/attention", response_model=AttentionResponse, responses=ERRORS)
    async def attention(body: AttentionRequest, request: Request) -> Any:
        return await run(request, "attention", body.model, lambda s: s.prepare_attention(body, limits))

    @app.post("/v1/generate", response_model=GenerateResponse, responses={
        **ERRORS, 200: {"description": "the result, or with stream: true server-sent events (event: token, "
                                       "data: {\"text\": ...}; then event: done with the result, or event: error)",
                        "content": {"application/json": {}, "text/event-stream": {}}}})
    async def generate(body: GenerateRequest, request: Request) -> Any:
        served, job = state.submit(body.model, "generate", lambda s: s.prepare_generate(body, limits))
        prompt = job.work.payload.prompt
        if not body.stream:
            return generated_json(served.name, prompt, await state.answer(request, job))
        return StreamingResponse(_events(state, request, job, served.name, prompt),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _events(state: ServerState, request: Request, job: Job, model: str, prompt: str) -> AsyncIterator[str]:
    """The server-sent events of a streamed generation; the job is cancelled when the stream ends early."""
    deadline = job.arrived + state.limits.timeout_s
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(job.reply.events.get(), max(deadline - time.monotonic(), 0))
            except asyncio.TimeoutError:
                yield _sse("error", {"error": f"the request took longer than this server's timeout of "
                                              f"{state.limits.timeout_s:g} s"})
                return
            job.reply.finished = kind in ("done", "error")
            if kind == "token":
                yield _sse("token", {"text": value})
            elif kind == "done":
                yield _sse("done", generated_json(model, prompt, value))
                return
            else:
                yield _sse("error", {"error": value[1]})
                return
    finally:
        state.cancel(job)  # a no-op once finished; otherwise the row leaves the batch


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


# ------------------------------------------------------------------------------------------------ guard
ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class Guard:
    """In front of the app: reads the whole body (at most ``max_body_bytes``, within ``body_timeout_s``; it
    must be UTF-8), checks the API key on every path but ``OPEN_PATHS``, and counts each answer and its
    latency by endpoint. The app then reads the body from memory."""

    def __init__(self, app: ASGIApp, state: ServerState, api_key: str | None) -> None:
        self.app, self.state = app, state
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = {"code": 0}
        self.state.received += 1

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                await refusal(scope, receive, counted_send)
                return
            body = await self._read_body(scope, receive)
            if isinstance(body, Response):
                await body(scope, receive, counted_send)
                return
            if scope.get("method") == "POST":  # the body is JSON whatever the client's Content-Type says
                scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
                         + [(b"content-type", b"application/json")]}
            await self.app(scope, _replay(body, receive), counted_send)
        finally:
            self.state.answered += status["code"] != 0
            m = self.state.metrics
            m.requests.labels(endpoint, str(status["code"] or 499)).inc()
            m.latency.labels(endpoint).observe(time.monotonic() - start)

    def _refusal(self, scope: dict, path: str) -> Response | None:
        if self.key is None or path in OPEN_PATHS:
            return None
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key", b"")
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        if given and hmac.compare_digest(given, self.key):
            return None
        return error_response(401, "missing or wrong API key (send it as 'Authorization: Bearer KEY' or "
                                   "'X-API-Key: KEY')", {"WWW-Authenticate": "Bearer"})

    async def _read_body(self, scope: dict, receive: Callable[[], Awaitable[dict]]) -> bytes | Response:
        limits = self.state.limits
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        # The connection closes after these answers: the rest of the body is never read.
        close = {"Connection": "close"}
        too_large = error_response(413, f"the body is over this server's limit of {limits.max_body_bytes} bytes",
                                   close)
        if declared is not None:
            try:
                if int(declared) > limits.max_body_bytes:
                    return too_large
            except ValueError:
                return error_response(400, "the Content-Length header is not a number")
        chunks, size = [], 0
        deadline = time.monotonic() + limits.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                return error_response(408, f"the body was not sent within {limits.body_timeout_s:g} s", close)
            if message["type"] == "http.disconnect":
                return Response(status_code=499)  # nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limits.max_body_bytes:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body.strip() and scope.get("method") == "POST":
            return error_response(400, "the body is empty: send a JSON object")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return error_response(400, f"the body is not valid UTF-8 (byte 0x{body[exc.start]:02x} at offset "
                                       f"{exc.start})")
        return body


def _replay(body: bytes, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
    """A receive that gives ``body`` once, then the real messages (a disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
