"""Bad requests against a real server: each gets a 4xx JSON error that names the problem (never a 500, never
a hang), and the server keeps answering /health throughout. Hand-written cases (malformed JSON, wrong
types, missing and unknown fields, empty and huge texts, invalid UTF-8, lone surrogates, unknown models,
beam 0 / 10000, negative and NaN temperatures, 100 MB bodies declared or streamed, a slow client, an
abrupt disconnect), then schemathesis against the OpenAPI description with a small example budget."""

from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest
import schemathesis
from _serve import ServerProcess
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

# (path, raw body or JSON value, status, words the error must contain)
CASES: list[tuple[str, bytes | object, int, str]] = [
    ("/v1/translate", b'{"texts": [', 400, "malformed JSON"),
    ("/v1/translate", b"", 400, "the body is empty: send a JSON object"),
    ("/v1/translate", [1, 2], 422, "object"),
    ("/v1/translate", {}, 422, "texts: a required field is missing"),
    ("/v1/translate", {"texts": "one text"}, 422, "texts: Input should be a valid list"),
    ("/v1/translate", {"texts": [1]}, 422, "texts.0: Input should be a valid string"),
    ("/v1/translate", {"texts": []}, 422, "texts: List should have at least 1 item"),
    ("/v1/translate", {"texts": ["a"], "beam": 3}, 422, "beam: unknown field"),
    ("/v1/translate", {"texts": ["a"], "beam_size": "2"}, 422, "beam_size: Input should be a valid integer"),
    ("/v1/translate", {"texts": ["a"], "beam_size": 2.5}, 422, "beam_size"),
    ("/v1/translate", {"texts": ["a"], "beam_size": 0}, 422, "beam_size: Input should be greater than or equal to 1"),
    ("/v1/translate", {"texts": ["a"], "beam_size": 10000}, 422, "beam_size 10000 is over this server's limit of 4"),
    ("/v1/translate", {"texts": ["a"], "beam_size": 10**30}, 422, "beam_size"),
    ("/v1/translate", {"texts": ["a"] * 9}, 422, "9 texts; this server takes at most 8"),
    ("/v1/translate", {"texts": ["x" * 401]}, 422, "text 0 has 401 characters; this server takes at most 400"),
    ("/v1/translate", {"texts": ["1 " * 40]}, 422, "tokens; model 'translate' takes at most 32"),
    ("/v1/translate", b'{"texts": ["caf\xe9"]}', 400, "not valid UTF-8 (byte 0xe9"),
    ("/v1/translate", b'{"texts": ["\\ud800"]}', 422, "lone surrogate"),
    ("/v1/translate", {"model": "nope", "texts": ["a"]}, 404, "unknown model 'nope'; loaded: translate, lm"),
    ("/v1/translate", {"model": "lm", "texts": ["a"]}, 422, "model 'lm' (gpt) cannot translate; it can: generate"),
    ("/v1/translate", {"model": None, "texts": ["a"], "length_penalty": -1}, 422, "length_penalty"),
    ("/v1/generate", {"texts": ["a"]}, 422, "texts: unknown field"),
    ("/v1/generate", {"prompt": "a"}, 422, "name a model: 2 loaded models can generate (lm, lm_bpe)"),
    ("/v1/generate", {"model": "lm", "prompt": "a", "temperature": -1}, 422, "temperature"),
    ("/v1/generate", b'{"model": "lm", "prompt": "a", "temperature": NaN}', 422, "temperature"),
    ("/v1/generate", {"model": "lm", "prompt": "a", "top_p": 0}, 422, "top_p: Input should be greater than 0"),
    ("/v1/generate", {"model": "lm", "prompt": "a", "top_k": 0}, 422, "top_k"),
    ("/v1/generate", {"model": "lm", "prompt": "a", "seed": -1}, 422, "seed"),
    ("/v1/generate", {"model": "lm", "prompt": "a", "stream": "yes"}, 422, "stream: Input should be a valid boolean"),
    ("/v1/generate", {"model": "lm", "prompt": "a", "max_new_tokens": 41}, 422, "max_new_tokens 41 is over"),
    ("/v1/generate", {"model": "lm", "prompt": "a", "max_new_tokens": -1}, 422, "max_new_tokens"),
    ("/v1/generate", {"model": "lm", "prompt": "\u00fc\u4e2d"}, 422, "character(s) the tokenizer does not know"),
    ("/v1/generate", {"model": "lm", "prompt": "the dog " * 4}, 422,
     "the prompt has 32 tokens; model 'lm' takes at most 24"),
    ("/v1/embed", {"model": "translate", "texts": ["a"]}, 422, "cannot embed"),
    ("/v1/embed", {"model": "mlm", "texts": ["a " * 70]}, 422, "tokens; model 'mlm' takes at most 64"),
    ("/v1/classify", {"model": "mlm", "texts": ["a"]}, 422, "cannot classify; it can: embed, attention"),
    ("/v1/classify", {"texts": [None]}, 422, "texts.0: Input should be a valid string"),
    ("/v1/attention", {"model": "lm", "text": ""}, 422, "text: String should have at least 1 character"),
    ("/v1/attention", {"model": "lm", "text": " "}, 422, "--text is empty"),
    ("/v1/attention", {"model": "lm", "text": "a", "target": "b"}, 422, "--target is for translation models"),
    ("/v1/translate", b"x" * 70000, 413, "the body is over this server's limit of 65536 bytes"),
]


def _post(server: ServerProcess, path: str, body: bytes | object) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"}, timeout=30)


@pytest.mark.parametrize("path,body,status,words", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_request_gets_a_json_error_naming_the_problem(server: ServerProcess, path: str, body: bytes | object,
                                                          status: int, words: str) -> None:
    answer = _post(server, path, body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200


def test_wrong_method_and_path(server: ServerProcess) -> None:
    got = httpx.get(server.url + "/v1/translate")
    assert got.status_code == 405 and got.json() == {"error": "GET is not allowed on /v1/translate"}
    got = httpx.post(server.url + "/v2/nothing", json={})
    assert got.status_code == 404 and got.json() == {"error": "no such endpoint: POST /v2/nothing"}


def _raw(server: ServerProcess, head: bytes, timeout: float = 10.0) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.sendall(head)
    return sock


def _response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            dict(line.split(b": ", 1) for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]).get(
                b"content-length", b"0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def test_a_declared_100_mb_body_is_refused_before_it_is_sent(server: ServerProcess) -> None:
    start = time.monotonic()
    sock = _raw(server, b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100000000\r\n\r\n" + b"[" * 65536)
    status, body = _response(sock)
    sock.close()
    assert status == 413 and "limit of 65536 bytes" in body["error"]
    assert time.monotonic() - start < 10


def test_a_streamed_100_mb_body_is_cut_at_the_limit(server: ServerProcess) -> None:
    sock = _raw(server, b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent = 0
    try:
        while sent < 100_000_000 and not select.select([sock], [], [], 0)[0]:  # until the server answers
            sock.sendall(chunk)
            sent += 65536
        status, body = _response(sock)
        assert status == 413 and "limit of 65536 bytes" in body["error"]
        assert sock.recv(1) == b""  # and closes the connection instead of reading the rest
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer: the kernel resets, which may drop the answer
    finally:
        sock.close()
    assert sent < 10_000_000


def test_a_slow_client_gets_408_and_others_are_served_meanwhile(server: ServerProcess) -> None:
    sock = _raw(server, b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"texts\": ")
    start = time.monotonic()
    got = httpx.post(server.url + "/v1/translate", json={"texts": ["5th march 1910"]}, timeout=10)
    assert got.status_code == 200 and time.monotonic() - start < 1.5  # not held up by the slow one
    status, body = _response(sock)
    sock.close()
    assert status == 408 and "not sent within 1.5 s" in body["error"]


def test_an_abrupt_disconnect_cancels_the_work(server: ServerProcess) -> None:
    before = server.metric("attnkit_cancelled_requests_total", model="lm")
    body = json.dumps({"model": "lm", "prompt": "a", "max_new_tokens": 40, "temperature": 1.0}).encode()
    for _ in range(3):
        head = b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        sock = _raw(server, head + body)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        sock.close()
    deadline = time.monotonic() + 10
    while server.metric("attnkit_cancelled_requests_total", model="lm") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("attnkit_cancelled_requests_total", model="lm") > before
    assert httpx.get(server.url + "/health", timeout=5).json()["status"] == "ok"


# ------------------------------------------------------------------------------------------ schemathesis
def _checker(operation, mode: GenerationMode, statuses: set[int]):  # noqa: ANN001, ANN202
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def check(case) -> None:  # noqa: ANN001
        response = case.call(timeout=30)
        statuses.add(response.status_code)
        assert response.status_code < 500 or response.status_code == 503, response.text
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}, response.text
        case.validate_response(response, checks=[response_schema_conformance])

    return check


def test_generated_requests_get_a_correct_answer_or_a_4xx(server: ServerProcess) -> None:
    """Requests that schemathesis derives from /openapi.json, valid and invalid, a few per endpoint: each
    answer a correct result (conforming to the schema) or a JSON error, never a 5xx but 503."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * operation.label.startswith("POST")
        for mode in modes:
            _checker(operation, mode, seen.setdefault(operation.label, set()))()
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    assert {"POST /v1/translate", "POST /v1/generate", "POST /v1/embed", "POST /v1/classify",
            "POST /v1/attention"} <= set(seen)
    assert sum(200 in statuses for statuses in seen.values()) >= 6, seen  # (random texts are often refused)
