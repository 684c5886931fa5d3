"""Every endpoint of a real server (a subprocess on 127.0.0.1), and batched answers equal to one-at-a-time
ones: concurrent requests of mixed lengths and settings, which the server decodes in shared batches (the
batch-size metric shows it), each get what the run gives that request alone in this process (identical
translations and generated text, greedy and seeded sampling; embeddings and probabilities to 1e-5; the
viewer's attention weights to the 4 decimals the API sends)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from _serve import ServerProcess, sse_events

from attnkit.tasks.runs import Run
from attnkit.viz.load import VIEWS, Viewable, attention_maps

SOURCES = ["Sunday, March 21, 1948", "5th march 1910", "1st april 2038", "october 4, 1900", "Tuesday, May 23, 1978",
           "", "Jan 12th, nineteen thirty-four", "2008 november 5", "Thursday, april the twenty-first twenty sixty-one"]
TEXTS = ["the dog runs", "a cat", "the big red house under the green tree", "man", "small child on the park"]


def _concurrently(server: ServerProcess, path: str, bodies: list[dict]) -> list[httpx.Response]:
    with server.client() as client, ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.post(path, json=b), bodies))


def _batched(server: ServerProcess, model: str, kind: str) -> tuple[float, float]:
    """(requests, batches) the model has run for ``kind``."""
    labels = {"model": model, "kind": kind}
    return (server.metric("attnkit_batch_requests_sum", **labels), server.metric("attnkit_batch_requests_count",
                                                                                 **labels))


def test_models_health_and_openapi(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "models": 5}
    models = {m["name"]: m for m in httpx.get(server.url + "/v1/models").json()["models"]}
    assert models["translate"]["capabilities"] == ["translate", "attention"]
    assert models["lm"]["capabilities"] == ["generate", "attention"]
    assert models["classify"]["capabilities"] == ["embed", "classify", "attention"]
    assert models["lm"]["max_tokens"] == 24
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    for path in ("/v1/translate", "/v1/generate", "/v1/embed", "/v1/classify", "/v1/attention", "/v1/models",
                 "/health", "/metrics"):
        assert path in paths


def test_batched_translations_equal_one_at_a_time(server: ServerProcess, local: dict[str, Run]) -> None:
    bodies = [{"model": "translate", "texts": SOURCES[i % 9 : i % 9 + 1 + i % 3], "beam_size": 1 + 2 * (i % 2)}
              for i in range(16)]
    before = _batched(server, "translate", "translate")
    answers = _concurrently(server, "/v1/translate", bodies)
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        want = [local["translate"].translate([t], beam_size=body["beam_size"])[0] for t in body["texts"]]
        assert [t["text"] for t in answer.json()["translations"]] == want
    requests, batches = np.subtract(_batched(server, "translate", "translate"), before)
    assert requests == 16 and batches < 16, "concurrent requests should share batches"


def test_alignments_are_the_viewers_strongest_links(server: ServerProcess, local: dict[str, Run]) -> None:
    answer = server.post("/v1/translate", {"model": "translate", "texts": SOURCES[:2], "alignments": True}).json()
    run = local["translate"]
    for text, got in zip(SOURCES[:2], answer["translations"], strict=True):
        view = Viewable("translation", run.model, run.tokenizer, run.inference)
        cross = attention_maps(view, text, got["text"]).get("cross")
        assert got["alignment"]["source_tokens"] == cross.keys
        assert got["alignment"]["links"] == cross.weights[-1].mean(0)[:-1].argmax(-1).tolist()
        assert len(got["alignment"]["target_tokens"]) == len(got["alignment"]["links"])


GENERATIONS = [
    {"prompt": "the dog", "max_new_tokens": 12, "temperature": 0.0},
    {"prompt": "a", "max_new_tokens": 5, "temperature": 0.9, "seed": 1},
    {"prompt": "small red house", "max_new_tokens": 8, "temperature": 1.1, "top_k": 5, "seed": 2},
    {"prompt": "", "max_new_tokens": 10, "temperature": 0.8, "top_p": 0.9, "seed": 3},
    {"prompt": "the cat runs on the", "max_new_tokens": 3, "temperature": 0.0},
    {"prompt": "tree", "max_new_tokens": 40, "temperature": 0.7, "seed": 4},  # past the context: windows
    {"prompt": "big", "max_new_tokens": 0, "temperature": 0.0},
    {"prompt": "on the", "max_new_tokens": 9, "temperature": 1.0, "seed": 5},
]


@pytest.mark.parametrize("model", ["lm", "lm_bpe"])
def test_batched_generations_equal_one_at_a_time(server: ServerProcess, local: dict[str, Run], model: str) -> None:
    bodies = [{"model": model, **g} for g in GENERATIONS * 2]
    before = _batched(server, model, "generate")
    answers = _concurrently(server, "/v1/generate", bodies)
    gen = local[model].inference
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        options = {k: v for k, v in body.items() if k not in ("model", "prompt")}
        assert answer.json()["text"] == gen.generate(body["prompt"], **options)[0], body
    rows, steps = np.subtract(_batched(server, model, "generate"), before)
    assert rows > steps, "generation rows should share decoding steps"


def test_streamed_tokens_add_up_to_the_result(server: ServerProcess, local: dict[str, Run]) -> None:
    body = {"model": "lm_bpe", "prompt": "the", "max_new_tokens": 12, "temperature": 1.0, "seed": 9, "stream": True}
    answer = server.post("/v1/generate", body)
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = sse_events(answer.text)
    assert [e for e, _ in events[:-1]] == ["token"] * (len(events) - 1) and events[-1][0] == "done"
    assert len(events) > 2
    result = events[-1][1]
    assert "".join(d["text"] for _, d in events[:-1]) == result["text"]
    assert result["text"] == local["lm_bpe"].inference.generate("the", max_new_tokens=12, temperature=1.0, seed=9)[0]
    assert result["tokens"] == 12 and result["seed"] == 9


def test_unseeded_generation_reports_the_seed_that_reproduces_it(server: ServerProcess) -> None:
    body = {"model": "lm", "prompt": "the", "max_new_tokens": 10, "temperature": 1.0}
    first = server.post("/v1/generate", body).json()
    again = server.post("/v1/generate", {**body, "seed": first["seed"]}).json()
    assert again["text"] == first["text"]


def test_batched_embeddings_and_classes_equal_one_at_a_time(server: ServerProcess, local: dict[str, Run]) -> None:
    bodies = [{"model": "classify", "texts": TEXTS[i % 5 : i % 5 + 1 + i % 2]} for i in range(10)]
    for path in ("/v1/embed", "/v1/classify"):
        answers = _concurrently(server, path, bodies)
        for body, answer in zip(bodies, answers, strict=True):
            assert answer.status_code == 200, answer.text
            for text, got in zip(body["texts"], answer.json()["vectors" if path == "/v1/embed" else "results"],
                                 strict=True):
                if path == "/v1/embed":
                    want = local["classify"].embed([text]).vectors[0]
                    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
                else:
                    label, prob = local["classify"].classify([text])[0]
                    assert got["label"] == label and got["probability"] == pytest.approx(prob, abs=1e-5)
    requests, batches = _batched(server, "classify", "classify")
    assert batches < requests


@pytest.mark.parametrize("model,text,target", [("translate", "5th march 1910", None),
                                               ("translate", "5th march 1910", "1910-03-05"),
                                               ("lm", "the dog", None), ("mlm", "a small cat", None)])
def test_attention_is_the_viewers(server: ServerProcess, local: dict[str, Run], model: str, text: str,
                                  target: str | None) -> None:
    answer = server.post("/v1/attention", {"model": model, "text": text, "target": target, "html": True})
    assert answer.status_code == 200, answer.text
    run = local[model]
    family = VIEWS[run.family]
    view = Viewable(family, run.model, run.tokenizer, run.inference if family == "translation" else None)
    maps = attention_maps(view, text, target)
    got = answer.json()
    assert [m["kind"] for m in got["maps"]] == [m.kind for m in maps.maps]
    for g, m in zip(got["maps"], maps.maps, strict=True):
        assert g["queries"] == m.queries and g["keys"] == m.keys
        np.testing.assert_allclose(torch.tensor(g["weights"]), m.weights, atol=6e-5)
    assert got["html"].startswith("<!DOCTYPE html>") and '"kinds"' in got["html"]


def test_attention_is_the_models_own(server: ServerProcess, local: dict[str, Run], tmp_path: Path) -> None:
    """The weights /v1/attention sends (what the page's viewer draws) are the model's attention: Hugging
    Face's GPT-2 with the run's weights (exported by attnkit's converter), eager attention, output_attentions."""
    transformers = pytest.importorskip("transformers")
    from attnkit.models.hf.gpt2 import save_gpt2

    run = local["lm"]
    save_gpt2(run.model, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    text = "the big dog runs"
    got = server.post("/v1/attention", {"model": "lm", "text": text}).json()["maps"]
    with torch.no_grad():
        ids = torch.tensor([run.tokenizer.encode(text)])
        want = hf(ids, output_attentions=True).attentions  # per layer (1, H, T, T)
    assert [m["kind"] for m in got] == ["decoder"] and len(got[0]["weights"]) == len(want)
    np.testing.assert_allclose(torch.tensor(got[0]["weights"]), torch.cat(want).numpy(), atol=6e-5)


def test_metrics_in_the_prometheus_format(server: ServerProcess) -> None:
    server.post("/v1/generate", {"model": "lm", "prompt": "a", "max_new_tokens": 4})
    text = httpx.get(server.url + "/metrics").text
    for name in ("attnkit_requests_total", "attnkit_request_seconds_bucket", "attnkit_batch_requests_bucket",
                 "attnkit_queue_depth", "attnkit_generated_tokens_total", "attnkit_tokens_per_second"):
        assert name in text
    assert server.metric("attnkit_generated_tokens_total", model="lm") > 0
