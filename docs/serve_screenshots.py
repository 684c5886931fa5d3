"""The screenshots of docs/serve.md: the page of ``attnkit serve`` in headless Chromium, used as a person
would (choose a model, type, Run), and the attention viewer's views of the result.

    .venv/bin/python docs/serve_screenshots.py [RUNS_DIR]   # about a minute: trains the server tests' runs

It trains the small runs of the server tests (``tests/serve/_serve.py``: a dates translation run and a
character GPT), starts ``attnkit serve`` on 127.0.0.1, drives the page over the DevTools protocol
(``tests/serve/_cdp.py``) and writes docs/serve-page.png, docs/viewer-head.png, docs/viewer-model.png
and docs/viewer-alignment.png.
"""

from __future__ import annotations

import base64
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests" / "serve"))
from _cdp import Chromium, submit_page  # noqa: E402
from _serve import ServerProcess, train_serve_runs  # noqa: E402

FRAME = "document.getElementById('viewer')"


def use(browser: Chromium, url: str, model: str, text: str, options: dict[str, str]) -> None:
    page = submit_page(browser, url, model, text, options)
    if page["state"] != "1":
        raise RuntimeError(f"the page answered {page['message']!r}")
    browser.wait_for(f"{FRAME}.dataset.ready")


def frame_eval(browser: Chromium, js: str) -> None:
    browser.eval(f"(() => {{ const doc = {FRAME}.contentDocument; {js} }})()")
    browser.eval(f"(() => {{ const f = {FRAME}; f.style.height = (f.contentDocument.documentElement.scrollHeight"
                 " + 20) + 'px'; })()")


def shot(browser: Chromium, path: Path, selector: str | None = None, pad: int = 8) -> None:
    """A PNG of the whole page (``selector`` None) or of one element of the viewer frame."""
    if selector is None:
        box = browser.eval("[0, 0, document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    else:
        # In view first (Chromium may leave parts of a frame unpainted outside the viewport), the mouse out of the
        # way (where it clicked Run, a token scrolled under it would count as hovered).
        browser.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 0, "y": 0}, session=True)
        browser.eval(f"{FRAME}.contentDocument.querySelector({selector!r}).scrollIntoView()")
        browser.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        box = browser.eval(f"(() => {{ const f = {FRAME}.getBoundingClientRect(); const e = {FRAME}.contentDocument"
                           f".querySelector({selector!r}).getBoundingClientRect(); return [f.left + e.left + "
                           "window.scrollX, f.top + e.top + window.scrollY, e.width, e.height]; })()")
    x, y, w, h = box
    clip = {"x": max(0, x - pad), "y": max(0, y - pad), "width": w + 2 * pad, "height": h + 2 * pad, "scale": 1}
    data = browser.call("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                        session=True)["data"]
    path.write_bytes(base64.b64decode(data))
    print(f"wrote {path} ({int(clip['width'])} x {int(clip['height'])})")


def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="serve-shots-") as tmp:
        # An argument: a folder to keep the trained runs in (and reuse them from) between calls.
        keep = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp) / "runs"
        if not (keep / "lm").is_dir():
            keep.mkdir(parents=True, exist_ok=True)
            train_serve_runs(keep)
        runs = {name: keep / name for name in ("translate", "lm")}
        server = ServerProcess({"translate": runs["translate"], "lm": runs["lm"]})
        browser = Chromium(chromium, Path(tmp) / "profile")
        try:
            use(browser, server.url, "translate", "Sunday, March 21, 1948", {"beam": "4", "nbest": "3"})
            frame_eval(browser, "const s = doc.getElementById('kind'); s.value = 'cross';"
                                " s.dispatchEvent(new Event('change'));")
            shot(browser, DOCS / "serve-page.png")
            shot(browser, DOCS / "viewer-alignment.png", "#headview")
            shot(browser, DOCS / "viewer-model.png", "#model-part")
            use(browser, server.url, "lm", "the dog runs", {"max_new": "12", "temperature": "0", "seed": "0"})
            frame_eval(browser, "doc.querySelector('#headview text[data-q=\"4\"]').dispatchEvent(new MouseEvent("
                                "'mouseover', {bubbles: true}));")  # hover 'd': its lines only
            shot(browser, DOCS / "viewer-head.png", "#views")
        finally:
            browser.close()
            code = server.stop()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
