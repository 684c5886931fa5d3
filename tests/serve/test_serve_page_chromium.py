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
import numpy as np
import pytest
from _cdp import Chromium, submit_page
from _serve import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "viz"))
from test_viewer_chromium import chromium  # noqa: E402, F401  (the fixture that finds or installs Chromium)


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Chromium]:  # noqa: F811
    b = Chromium(chromium, tmp_path / "profile")
    yield b
    b.close()


def _use(browser: Chromium, server: ServerProcess, model: str, text: str, options: dict[str, str]) -> str:
    page = submit_page(browser, server.url, model, text, options)
    assert page["typed"] == text
    assert page["state"] == "1", page["message"]
    return page["result"]


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


FRAME = "document.getElementById('viewer').contentDocument"
LINE_PX, MIN_LINE_PX = 8.0, 0.1  # attnkit.viz.html's: a weight of 1 is 8 px wide; under 0.1 px not drawn


def _check_head_view(browser: Chromium, layer: list[list[list[float]]], across: bool) -> None:
    """The head view draws every head's lines of this layer: each line's weight (and width = weight x 8 px)
    is the weight /v1/attention returned; every weight above the drawing threshold has its line."""
    lines = browser.eval(f"[...{FRAME}.querySelectorAll('#headview line')].map(l => [+l.dataset.h, +l.dataset.q, "
                         "+l.dataset.k, +l.dataset.w, +l.getAttribute('stroke-width'), +l.getAttribute('x1') - "
                         "l.getAttribute('x2'), +l.getAttribute('y1') - l.getAttribute('y2'), "
                         "l.getAttribute('stroke')])")
    drawn = {(h, q, k) for h, q, k, *_ in lines}
    for h, q, k, w, width, dx, dy, _ in lines:
        assert abs(w - layer[h][q][k]) <= 6e-4 and abs(width - LINE_PX * w) <= 1e-3
        # An alignment has the target tokens below the source; a head view the queries left of the keys.
        assert dy > 0 if across else dx < 0
    wanted = {(h, q, k) for h, head in enumerate(layer) for q, row in enumerate(head) for k, w in enumerate(row)
              if w * LINE_PX >= MIN_LINE_PX + 0.01}
    assert wanted <= drawn and len(drawn) == len(lines)
    colours = {h: c for h, _, _, _, _, _, _, c in lines}
    assert len(set(colours.values())) == len(colours)  # one colour per head
    if len(layer) > 1:  # a head toggled off leaves the drawing
        browser.eval(f"(() => {{ const c = {FRAME}.getElementById('hv-h0'); c.click(); }})()")
        heads = browser.eval(f"[...new Set([...{FRAME}.querySelectorAll('#headview line')].map(l => +l.dataset.h))]")
        assert 0 not in heads and len(heads) >= 1
        browser.eval(f"{FRAME}.getElementById('hv-h0').click()")


def _check_model_view(browser: Chromium, weights: list) -> None:
    """One thumbnail per layer x head whose pixels are the weights' colours; clicking one opens it in the
    matrix."""
    shown = browser.eval(f"[...{FRAME}.querySelectorAll('#modelview .thumb')].map(t => {{ const c = "
                         "t.querySelector('canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, "
                         "c.height).data; return [+t.dataset.layer, +t.dataset.head, c.width, c.height, "
                         "Array.from(d.filter((_, i) => i % 4 === 0))]; })")
    assert [(layer, head) for layer, head, *_ in shown] == [(i, j) for i in range(len(weights))
                                                            for j in range(len(weights[0]))]
    for layer, head, width, height, reds in shown:
        w = np.asarray(weights[layer][head])
        assert (height, width) == w.shape
        np.testing.assert_allclose(np.asarray(reds).reshape(w.shape), 255 * (1 - w), atol=1.0)
    last = len(weights) - 1, len(weights[0]) - 1
    browser.eval(f"{FRAME}.querySelector('#modelview .thumb[data-layer=\"{last[0]}\"][data-head=\"{last[1]}\"]')"
                 ".click()")
    assert browser.eval(f"{FRAME}.getElementById('layer').value") == str(last[0])
    assert browser.eval(f"{FRAME}.getElementById('head').value") == str(last[1])
    _check_viewer(browser, weights[last[0]][last[1]])


def test_typing_a_prompt_streams_the_continuation_and_shows_its_attention(browser: Chromium,
                                                                          server: ServerProcess) -> None:
    options = {"max_new": "10", "temperature": "0.9", "seed": "5"}
    shown = _use(browser, server, "lm", "the dog", options)
    want = server.post("/v1/generate", {"model": "lm", "prompt": "the dog", "max_new_tokens": 10,
                                        "temperature": 0.9, "seed": 5}).json()["text"]
    assert shown == want
    assert int(browser.eval("document.getElementById('output').dataset.tokens")) > 1  # it came in pieces
    attention = server.post("/v1/attention", {"model": "lm", "text": "the dog" + want}).json()
    weights = attention["maps"][0]["weights"]
    _check_viewer(browser, weights[0][0])  # the viewer opens on layer 0, head 0
    _check_head_view(browser, weights[0], across=False)
    _check_model_view(browser, weights)
    assert browser.eval("document.getElementById('errors').textContent") == ""
    assert browser.problems() == []


def test_typing_a_sentence_shows_its_translation_and_alignment(browser: Chromium, server: ServerProcess) -> None:
    shown = _use(browser, server, "translate", "5th march 1910", {"beam": "2", "nbest": "2"})
    want = server.post("/v1/translate", {"model": "translate", "texts": ["5th march 1910"], "beam_size": 2,
                                         "n_best": 2}).json()
    assert shown == want["translations"][0]["text"] and re.fullmatch(r"[0-9-]+", shown)
    listed = browser.eval("[...document.querySelectorAll('#hypotheses li')].map(li => [li.firstChild.textContent, "
                          "li.querySelector('.score').textContent])")
    assert listed == [[h["text"], f"{h['score']:.4f}"] for h in want["translations"][0]["hypotheses"]]
    attention = server.post("/v1/attention", {"model": "translate", "text": "5th march 1910", "target": shown}).json()
    _check_viewer(browser, attention["maps"][0]["weights"][0][0])  # the encoder's, the viewer's first part
    cross = next(m for m in attention["maps"] if m["kind"] == "cross")
    browser.eval(f"(() => {{ const s = {FRAME}.getElementById('kind'); s.value = 'cross';"
                 " s.dispatchEvent(new Event('change')); })()")
    _check_viewer(browser, cross["weights"][0][0])
    _check_head_view(browser, cross["weights"][0], across=True)  # drawn as source / target alignment
    _check_model_view(browser, cross["weights"])
    assert browser.problems() == []


def test_the_page_needs_nothing_from_elsewhere(server: ServerProcess) -> None:
    page = httpx.get(server.url + "/").text
    assert "http://" not in page and "https://" not in page and "<link" not in page and "src=" not in page
