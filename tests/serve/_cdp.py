"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fds 3 and 4, messages
ending in NUL), enough to drive one page of headless Chromium as a person would: navigate, type, click,
read the DOM, and collect console errors and uncaught exceptions."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any


class Chromium:
    def __init__(self, path: str, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # the child reads commands on fd 3 and writes answers on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--remote-debugging-pipe", "--window-size=1200,900",
             f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next, self._buffer = 0, b""
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Runtime.enable", session=True)
        self.call("Page.enable", session=True)

    def call(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 30) -> dict:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
                self.events.append(reply)

    def _read(self, deadline: float) -> list[dict]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in messages]

    def eval(self, expression: str) -> Any:  # noqa: ANN401
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:  # noqa: ANN401
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{expression} stayed false for {timeout} s")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.eval(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                        " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1}, session=True)

    def type(self, text: str) -> None:
        """Key presses into the focused element, one character at a time."""
        for ch in text:
            self.call("Input.dispatchKeyEvent", {"type": "keyDown", "text": ch}, session=True)
            self.call("Input.dispatchKeyEvent", {"type": "keyUp"}, session=True)

    def problems(self) -> list[str]:
        """Console errors and uncaught exceptions seen so far."""
        out = []
        for e in self.events:
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(e["params"]["exceptionDetails"])[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"):
                out.append(json.dumps(e["params"]["args"])[:500])
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def submit_page(browser: Chromium, url: str, model: str, text: str, options: dict[str, str]) -> dict[str, str]:
    """Use ``attnkit serve``'s page at ``url`` as a person would: choose ``model``, set the ``options``
    fields (element id -> value), type ``text``, press Run and wait until the answer (and, when it
    succeeded, the attention viewer) is shown. Returns what the page then holds: ``typed`` (the text box),
    ``state`` ("1": succeeded), ``message`` (the error line) and ``result`` (the answer shown)."""
    browser.call("Page.navigate", {"url": url + "/"}, session=True)
    browser.wait_for("document.body !== null && document.body.dataset.ready === '1'")
    browser.eval(f"(() => {{ const s = document.getElementById('model'); s.value = '{model}';"
                 " s.dispatchEvent(new Event('change')); })()")
    for name, value in options.items():
        browser.eval(f"document.getElementById('{name}').value = '{value}'")
    browser.click("#text")
    browser.type(text)
    typed = browser.eval("document.getElementById('text').value")
    browser.click("#run")
    state = browser.wait_for("document.getElementById('output').dataset.done")
    if state == "1":
        browser.wait_for("document.getElementById('viewer').dataset.ready")
    return {"typed": typed, "state": state, "message": browser.eval("document.getElementById('message').textContent"),
            "result": browser.eval("document.getElementById('result').textContent")}
