"""A self-contained HTML attention viewer: one file, no network, the weights embedded as JSON.

Choose the kind of attention (model part), the layer and the head; the matrix shows the weights (rows:
queries, columns: keys; white = 0 to blue = 1, i.e. colour (255(1-w), 255(1-w), 255)); hovering a query
token (a row label or a token in the query sentence) highlights the keys it attends to in the key
sentence, in orange with opacity = weight. The URL fragment selects the state, so a page can be opened
directly on a view: ``viewer.html#kind=cross&layer=1&head=2&focus=3`` (``focus`` = the hovered query).
JavaScript errors are shown in the page (``#errors``) so that a headless browser's DOM reveals them.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from attnkit.viz.weights import KIND_TITLES, AttentionMaps

CELL_PX = 18

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>attnkit attention viewer: __TITLE__</title>
<style>
body { font-family: sans-serif; margin: 12px; color: #222; background: #fff; }
#controls { margin-bottom: 10px; } #controls label { margin-right: 14px; }
#status { font-size: 12px; color: #555; margin: 4px 0 8px; }
#errors { color: #b00; font-weight: bold; white-space: pre-wrap; }
.sentence { margin: 6px 0; line-height: 1.9; max-width: 1200px; }
.sentence span { padding: 2px 3px; margin: 1px; border-radius: 3px; cursor: default; }
#queries span:hover, #queries span.focus { outline: 2px solid #d60; }
#matrix { display: grid; justify-content: start; gap: 0; margin-top: 10px; }
#matrix div { width: __CELL__px; height: __CELL__px; box-sizing: border-box; }
#matrix div.rl { width: auto; min-width: 40px; padding-right: 4px; font-size: 11px; text-align: right;
  white-space: nowrap; overflow: hidden; line-height: __CELL__px; cursor: default; }
#matrix div.cl { height: auto; font-size: 11px; writing-mode: vertical-rl; transform: rotate(180deg);
  white-space: nowrap; overflow: hidden; max-height: 90px; }
#matrix div.rl.focus { background: #fd8; }
</style></head>
<body>
<div id="errors"></div>
<h3>__TITLE__</h3>
<div id="controls">
 <label>model part <select id="kind"></select></label>
 <label>layer <select id="layer"></select></label>
 <label>head <select id="head"></select></label>
</div>
<div id="status"></div>
<div>queries (hover one): <div id="queries" class="sentence"></div></div>
<div>keys it attends to: <div id="keys" class="sentence"></div></div>
<div id="matrix"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
(function () {
  const errors = document.getElementById("errors");
  function report(msg) { errors.textContent += msg + "\\n"; }
  window.addEventListener("error", e => report("error: " + e.message));
  const consoleError = console.error.bind(console);
  console.error = function (...args) { report("console.error: " + args.join(" ")); consoleError(...args); };

  const DATA = JSON.parse(document.getElementById("data").textContent);
  const CELL = DATA.cell;
  const state = { kind: DATA.kinds[0].kind, layer: 0, head: 0, focus: -1 };
  const $ = id => document.getElementById(id);

  function kindData() { return DATA.kinds.find(k => k.kind === state.kind); }
  function weight(k, q, j) { return k.w[state.layer][state.head][q][j] / 1000; }
  function fill(sel, n, value) {
    sel.innerHTML = "";
    for (let i = 0; i < n; i++) {
      const o = document.createElement("option"); o.value = i; o.textContent = i; sel.appendChild(o);
    }
    sel.value = value;
  }
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.has("kind") && DATA.kinds.some(k => k.kind === p.get("kind"))) state.kind = p.get("kind");
    const k = kindData();
    const clamp = (v, n) => Math.max(0, Math.min(n - 1, parseInt(v, 10) || 0));
    if (p.has("layer")) state.layer = clamp(p.get("layer"), k.layers);
    if (p.has("head")) state.head = clamp(p.get("head"), k.heads);
    if (p.has("focus")) state.focus = Math.min(parseInt(p.get("focus"), 10), k.queries.length - 1);
  }
  function writeHash() {
    if (location.protocol === "about:") return;  // a srcdoc frame (attnkit serve's page) has no URL to keep
    history.replaceState(null, "", "#kind=" + state.kind + "&layer=" + state.layer + "&head=" + state.head +
      (state.focus >= 0 ? "&focus=" + state.focus : ""));
  }
  function color(w) { const c = Math.round(255 * (1 - w)); return "rgb(" + c + "," + c + ",255)"; }

  function renderMatrix(k) {
    const m = $("matrix");
    m.innerHTML = "";
    m.style.gridTemplateColumns = "auto repeat(" + k.keys.length + ", " + CELL + "px)";
    m.appendChild(document.createElement("div"));
    k.keys.forEach(t => {
      const d = document.createElement("div"); d.className = "cl"; d.textContent = t; m.appendChild(d);
    });
    k.queries.forEach((t, q) => {
      const r = document.createElement("div");
      r.className = "rl"; r.textContent = t; r.dataset.q = q;
      r.addEventListener("mouseenter", () => setFocus(q));
      m.appendChild(r);
      for (let j = 0; j < k.keys.length; j++) {
        const c = document.createElement("div");
        const w = weight(k, q, j);
        c.className = "cell"; c.style.background = color(w); c.dataset.q = q; c.dataset.k = j;
        c.title = t + " -> " + k.keys[j] + ": " + w.toFixed(3);
        m.appendChild(c);
      }
    });
  }
  function measure() {
    // Where the first cell landed, for tests that read a screenshot (after every other element is laid out).
    const m = $("matrix"), first = m.querySelector(".cell");
    if (first) {
      const r = first.getBoundingClientRect();
      m.dataset.left = r.left + window.scrollX; m.dataset.top = r.top + window.scrollY; m.dataset.cell = CELL;
    }
  }
  function renderSentences(k) {
    const qs = $("queries"), ks = $("keys");
    qs.innerHTML = ""; ks.innerHTML = "";
    k.queries.forEach((t, q) => {
      const s = document.createElement("span"); s.textContent = t; s.dataset.q = q;
      s.addEventListener("mouseenter", () => setFocus(q));
      qs.appendChild(s);
    });
    k.keys.forEach((t, j) => {
      const s = document.createElement("span"); s.textContent = t; s.dataset.k = j; ks.appendChild(s);
    });
  }
  function setFocus(q) {
    state.focus = q;
    const k = kindData();
    document.querySelectorAll(".focus").forEach(e => e.classList.remove("focus"));
    document.querySelectorAll('#queries span[data-q="' + q + '"], #matrix .rl[data-q="' + q + '"]')
      .forEach(e => e.classList.add("focus"));
    document.querySelectorAll("#keys span").forEach(s => {
      const w = q >= 0 ? weight(k, q, +s.dataset.k) : 0;
      s.dataset.w = w.toFixed(3);
      s.style.background = "rgba(255,140,0," + w.toFixed(3) + ")";
    });
    writeHash(); status();
  }
  function status() {
    const k = kindData();
    $("status").textContent = "kind=" + state.kind + " layer=" + state.layer + " head=" + state.head +
      " focus=" + state.focus + " (" + k.title + ": " + k.layers + " layers x " + k.heads + " heads, " +
      k.queries.length + " queries x " + k.keys.length + " keys)";
  }
  function render() {
    const k = kindData();
    fill($("layer"), k.layers, state.layer); fill($("head"), k.heads, state.head);
    renderSentences(k); renderMatrix(k); setFocus(state.focus); measure();
  }
  const ks = $("kind");
  DATA.kinds.forEach(k => {
    const o = document.createElement("option"); o.value = k.kind; o.textContent = k.title; ks.appendChild(o);
  });
  readHash();
  ks.value = state.kind;
  ks.addEventListener("change", () => {
    state.kind = ks.value; state.layer = 0; state.head = 0; state.focus = -1; render();
  });
  $("layer").addEventListener("change", e => { state.layer = +e.target.value; render(); });
  $("head").addEventListener("change", e => { state.head = +e.target.value; render(); });
  window.addEventListener("hashchange", () => { readHash(); ks.value = state.kind; render(); });
  render();
  document.body.dataset.ready = "1";
})();
</script>
</body></html>
"""


def viewer_data(maps: AttentionMaps) -> dict:
    """The JSON the page embeds: per kind its title, sizes, labels and weights as integers in 0..1000."""
    kinds = []
    for m in maps.maps:
        n_layers, n_heads = m.weights.shape[:2]
        w = (m.weights.clamp(0, 1) * 1000).round().int().tolist()
        kinds.append({"kind": m.kind, "title": KIND_TITLES[m.kind], "layers": n_layers, "heads": n_heads,
                      "queries": m.queries, "keys": m.keys, "w": w})
    return {"model": maps.model, "cell": CELL_PX, "kinds": kinds}


def viewer_html(maps: AttentionMaps) -> str:
    """The viewer page for ``maps`` (one self-contained HTML document; ``attnkit serve`` shows it in a frame)."""
    if not maps.maps:
        raise ValueError("no attention weights to show")
    data = json.dumps(viewer_data(maps), separators=(",", ":"))
    # Inside <script> only "</" could end the element early; JSON allows "<\\/" for it.
    data = data.replace("</", "<\\/")
    return (_TEMPLATE.replace("__TITLE__", html.escape(f"{maps.model} attention"))
            .replace("__CELL__", str(CELL_PX)).replace("__DATA__", data))


def write_viewer(maps: AttentionMaps, path: str | Path) -> Path:
    """Write the viewer for ``maps`` to ``path`` (one HTML file) and return the path."""
    page = viewer_html(maps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
