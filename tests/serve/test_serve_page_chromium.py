"""The page of ``GET /`` in headless Chromium, driven as a person would (Chrome DevTools Protocol): choose
a model, type a text, click Run; the streamed continuation / the translation appears (the same text the
API gives), the viewer below it shows the attention of the result with the weights /v1/attention returns
in its heatmap cells, and there is no console error and no uncaught exception. The page fetches nothing
but the server's own API."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _cdp import Chromium
from _serve import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "viz"))
from test_viewer_chromium import chromium  # noqa: E402, F401  (the fixture that finds or installs Chromium)


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Chromium]:  # noqa: F811
    b = Chromium(chromium, tmp_path / "profile")
    yield b
    b.close()


def _use(browser: Chromium, server: ServerProcess, model: str, text: str, options: dict[str, str]) -> str:
    browser.call("Page.navigate", {"url": server.url + "/"}, session=True)
    browser.wait_for("document.body !== null && document.body.dataset.ready === '1'")
    browser.eval(f"(() => {{ const s = document.getElementById('model'); s.value = '{model}';"
                 " s.dispatchEvent(new Event('change')); })()")
    for name, value in options.items():
        browser.eval(f"document.getElementById('{name}').value = '{value}'")
    browser.click("#text")
    browser.type(text)
    assert browser.eval("document.getElementById('text').value") == text
    browser.click("#run")
    state = browser.wait_for("document.getElementById('output').dataset.done")
    assert state == "1", browser.eval("document.getElementById('message').textContent")
    browser.wait_for("document.getElementById('viewer').dataset.ready")
    return browser.eval("document.getElementById('result').textContent")


def _cells(browser: Chromium) -> list[tuple[float, str]]:
    """(weight in the cell's title, its background) of every heatmap cell in the viewer frame."""
    got = browser.eval("[...document.getElementById('viewer').contentDocument.querySelectorAll('#matrix .cell')]"
                       ".map(c => [c.title, c.style.background])")
    return [(float(title.rsplit(": ", 1)[1]), bg) for title, bg in got]


def _check_viewer(browser: Chromium, weights: list[list[float]]) -> None:
    assert browser.eval("document.getElementById('viewer').dataset.ready") == "1"
    frame_errors = browser.eval("document.getElementById('viewer').contentDocument.getElementById('errors')"
                                ".textContent")
    assert frame_errors.strip() == ""
    cells = _cells(browser)
    flat = [w for row in weights for w in row]
    assert len(cells) == len(flat)
    for (shown, bg), w in zip(cells, flat, strict=True):
        assert abs(shown - w) <= 6e-4
        r, g, b = map(int, re.fullmatch(r"rgb\((\d+), ?(\d+), ?(\d+)\)", bg).groups())
        assert r == g and b == 255 and abs(r - 255 * (1 - w)) <= 1  # the white-to-blue scale


def test_typing_a_prompt_streams_the_continuation_and_shows_its_attention(browser: Chromium,
                                                                          server: ServerProcess) -> None:
    options = {"max_new": "10", "temperature": "0.9", "seed": "5"}
    shown = _use(browser, server, "lm", "the dog", options)
    want = server.post("/v1/generate", {"model": "lm", "prompt": "the dog", "max_new_tokens": 10,
                                        "temperature": 0.9, "seed": 5}).json()["text"]
    assert shown == want
    assert int(browser.eval("document.getElementById('output').dataset.tokens")) > 1  # it came in pieces
    attention = server.post("/v1/attention", {"model": "lm", "text": "the dog" + want}).json()
    _check_viewer(browser, attention["maps"][0]["weights"][0][0])  # the viewer opens on layer 0, head 0
    assert browser.eval("document.getElementById('errors').textContent") == ""
    assert browser.problems() == []


def test_typing_a_sentence_shows_its_translation_and_alignment(browser: Chromium, server: ServerProcess) -> None:
    shown = _use(browser, server, "translate", "5th march 1910", {"beam": "2"})
    want = server.post("/v1/translate", {"model": "translate", "texts": ["5th march 1910"], "beam_size": 2}).json()
    assert shown == want["translations"][0]["text"] and re.fullmatch(r"[0-9-]+", shown)
    attention = server.post("/v1/attention", {"model": "translate", "text": "5th march 1910", "target": shown}).json()
    _check_viewer(browser, attention["maps"][0]["weights"][0][0])  # the encoder's, the viewer's first part
    assert browser.problems() == []


def test_the_page_needs_nothing_from_elsewhere(server: ServerProcess) -> None:
    page = httpx.get(server.url + "/").text
    assert "http://" not in page and "https://" not in page and "<link" not in page and "src=" not in page
