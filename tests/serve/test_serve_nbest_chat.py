"""n-best translations and chat generation through a real server: the API's n-best lists (texts and scores)
equal what ``attnkit translate run --n-best`` prints and what ``Translator.translate(..., nbest=)`` gives
for the same input, also when concurrent requests with different n share a batch; a chat (``messages``)
is rendered with the checkpoint's chat template and generates what ``ChatGenerator.chat`` gives alone,
streamed or not; a model without a template, malformed messages, or a prompt with messages are 422s; the
page offers a chat for a model with a template and shows the API's reply."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _serve import ServerProcess, sse_events

from attnkit.decoding.options import DecodeOptions
from attnkit.tasks.lm import ChatGenerator
from attnkit.tasks.runs import Run, open_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "viz"))
from _cdp import Chromium  # noqa: E402  (tests/serve/_cdp.py)
from _runs import run_cli  # noqa: E402  (tests/cli/_runs.py)
from test_viewer_chromium import chromium  # noqa: E402, F401  (the fixture that finds or installs Chromium)

SOURCES = ["Sunday, March 21, 1948", "5th march 1910", "", "october 4, 1900", "Tuesday, May 23, 1978",
           "Jan 12th, nineteen thirty-four"]
# A template of the usual shape (each turn's role, then its text; the assistant's turn opened), short because
# the test GPT's context is 24 tokens.
TEMPLATE = ("{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}a:{% endif %}")


def _nbest_local(run: Run, texts: list[str], beam: int, n: int) -> list[list[tuple[float, str]]]:
    hyps: list = []
    run.inference.translate(texts, options=DecodeOptions(beam_size=beam, n_best=n), nbest=hyps)
    return hyps


def test_n_best_equals_the_cli_and_the_python_api(server: ServerProcess, local: dict[str, Run],
                                                  serve_runs: dict[str, Path]) -> None:
    bodies = [{"model": "translate", "texts": SOURCES[i % 6 : i % 6 + 1 + i % 2], "beam_size": 3 + i % 2,
               "n_best": 1 + i % (3 + i % 2)} for i in range(10)]
    with server.client() as client, ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: client.post("/v1/translate", json=b), bodies))
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        want = _nbest_local(local["translate"], body["texts"], body["beam_size"], body["n_best"])
        for got, hyps in zip(answer.json()["translations"], want, strict=True):
            assert [h["text"] for h in got["hypotheses"]] == [text for _, text in hyps], body
            assert [h["score"] for h in got["hypotheses"]] == pytest.approx([s for s, _ in hyps], abs=1e-5)
            assert len(got["hypotheses"]) == (body["n_best"] if got["text"] or hyps else 0)
            if hyps:
                assert got["text"] == hyps[0][1]  # the best hypothesis is the translation
    # The CLI prints the same lists (TSV: line, rank, score to 4 decimals, text).
    texts = [t for t in SOURCES if t]
    code, out, err = run_cli(["translate", "run", str(serve_runs["translate"]), "--beam", "4", "--n-best", "3",
                              "--quiet"], "".join(t + "\n" for t in texts).encode())
    assert code == 0, err
    rows = [line.split("\t") for line in out.decode().splitlines()]
    api = server.post("/v1/translate", {"model": "translate", "texts": texts, "beam_size": 4, "n_best": 3}).json()
    shown = [(str(n), str(rank), h) for n, t in enumerate(api["translations"])
             for rank, h in enumerate(t["hypotheses"], 1)]
    assert [(n, rank, text) for n, rank, _, text in rows] == [(n, r, h["text"]) for n, r, h in shown]
    for (_, _, score, _), (_, _, h) in zip(rows, shown, strict=True):
        assert abs(float(score) - h["score"]) <= 5.1e-5


def test_n_best_bounds_and_greedy_scores(server: ServerProcess) -> None:
    got = server.post("/v1/translate", {"model": "translate", "texts": ["5th march 1910"], "n_best": 1}).json()
    assert got["translations"][0]["hypotheses"] == [{"text": got["translations"][0]["text"], "score": None}]
    plain = server.post("/v1/translate", {"model": "translate", "texts": ["5th march 1910"]}).json()
    assert plain["translations"][0]["hypotheses"] is None
    for body, words in (({"n_best": 3, "beam_size": 2}, "n_best 3 is over beam_size 2"),
                        ({"n_best": 0, "beam_size": 2}, "n_best: Input should be greater than or equal to 1"),
                        ({"n_best": "2", "beam_size": 2}, "n_best: Input should be a valid integer")):
        answer = server.post("/v1/translate", {"model": "translate", "texts": ["a"], **body})
        assert answer.status_code == 422 and words in answer.json()["error"], answer.text


@pytest.fixture(scope="module")
def chat_dir(serve_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The byte-BPE GPT run with a tokenizer_config.json holding a chat template (as a fine-tuned checkpoint's)."""
    d = tmp_path_factory.mktemp("chat") / "chat"
    shutil.copytree(serve_runs["lm_bpe"], d)
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def chat_server(chat_dir: Path, serve_runs: dict[str, Path]) -> Iterator[ServerProcess]:
    proc = ServerProcess({"chat": chat_dir, "lm": serve_runs["lm"]}, "--max-new-tokens", "40")
    yield proc
    assert proc.stop() == 0, "".join(proc.stderr)[-3000:]


CHATS = [[{"role": "user", "content": "the dog"}],
         [{"role": "system", "content": "brief"}, {"role": "user", "content": "a cat"}],
         [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a man"},
          {"role": "user", "content": "tree?"}]]


def test_chat_messages_use_the_template_and_equal_chat_alone(chat_server: ServerProcess, chat_dir: Path) -> None:
    chat = open_run(chat_dir).inference
    assert isinstance(chat, ChatGenerator)
    bodies = [{"model": "chat", "messages": m, "max_new_tokens": 6 + 3 * i, "temperature": t, "seed": i,
               "stream": i % 2 == 1} for i, (m, t) in enumerate([(c, t) for c in CHATS for t in (0.0, 0.9)])]
    with chat_server.client() as client, ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: client.post("/v1/generate", json=b), bodies))
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        result = sse_events(answer.text)[-1][1] if body["stream"] else answer.json()
        want = chat.chat(body["messages"], max_new_tokens=body["max_new_tokens"], temperature=body["temperature"],
                         seed=body["seed"])[0]
        assert result["text"] == want, body
        assert result["prompt"] == chat.tokenizer.render_chat(body["messages"])
        assert result["prompt"].startswith(body["messages"][0]["role"][0] + ":") and result["prompt"].endswith("a:")


@pytest.mark.parametrize("body,status,words", [
    ({"model": "lm", "messages": [{"role": "user", "content": "a"}]}, 422, "model 'lm' has no chat template"),
    ({"model": "chat", "messages": []}, 422, "messages: List should have at least 1 item"),
    ({"model": "chat", "messages": [{"role": "bot", "content": "a"}]}, 422, "messages.0.role: Input should be"),
    ({"model": "chat", "messages": [{"role": "user"}]}, 422, "messages.0.content: a required field is missing"),
    ({"model": "chat", "messages": [{"role": "user", "content": 3}]}, 422, "messages.0.content: Input should be"),
    ({"model": "chat", "messages": [{"role": "user", "content": "a", "name": "x"}]}, 422, "name: unknown field"),
    ({"model": "chat", "messages": {"role": "user"}}, 422, "messages: Input should be a valid list"),
    ({"model": "chat", "prompt": "a", "messages": [{"role": "user", "content": "a"}]}, 422,
     "either a prompt or messages"),
    ({"model": "chat", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b" * 4001}]},
     422, "the content of message 1 has 4001 characters; this server takes at most 4000"),
])
def test_bad_chats_are_422s(chat_server: ServerProcess, body: dict, status: int, words: str) -> None:
    answer = chat_server.post("/v1/generate", body)
    assert answer.status_code == status and words in answer.json()["error"], answer.text
    assert httpx.get(chat_server.url + "/health").status_code == 200


def test_the_page_sends_a_chat_message(chat_server: ServerProcess, chromium: str, tmp_path: Path) -> None:  # noqa: F811
    """On the page, a model with a chat template offers 'as a chat message' (a GPT without one does not);
    checked, the typed text goes as a user message and the reply streams in, equal to the API's."""
    b = Chromium(chromium, tmp_path / "profile")
    try:
        b.call("Page.navigate", {"url": chat_server.url + "/"}, session=True)
        b.wait_for("document.body !== null && document.body.dataset.ready === '1'")
        hidden = "document.getElementById('chat-label').classList.contains('hidden')"
        for model, offered in (("lm", False), ("chat", True)):
            b.eval(f"(() => {{ const s = document.getElementById('model'); s.value = '{model}';"
                   " s.dispatchEvent(new Event('change')); })()")
            assert b.eval(hidden) is not offered
        b.eval("document.getElementById('chat').checked = true; document.getElementById('max_new').value = '8'")
        b.click("#text")
        b.type("a cat")
        b.click("#run")
        assert b.wait_for("document.getElementById('output').dataset.done") == "1"
        want = chat_server.post("/v1/generate", {"model": "chat", "messages": [{"role": "user", "content": "a cat"}],
                                                 "max_new_tokens": 8, "temperature": 0.0, "seed": 0}).json()
        assert b.eval("document.getElementById('result').textContent") == want["text"]
        assert b.problems() == []
    finally:
        b.close()
