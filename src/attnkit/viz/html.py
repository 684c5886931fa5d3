"""A self-contained HTML attention viewer: one file, no network, the weights embedded as JSON.

Choose the kind of attention (model part), the layer and the head. Three views of the same weights:

* the matrix of one layer and head (rows: queries, columns: keys; white = 0 to blue = 1, i.e. colour
  (255(1-w), 255(1-w), 255), with the colour scale above it); cells of CELL_PX for short texts, smaller
  for long ones so that the matrix stays on screen;
* the head view (as bertviz draws it): lines from each query token to the key tokens, one colour per
  head (heads toggled by check boxes), a line's width = weight x LINE_PX; hovering a query shows its
  lines only. Encoder-decoder attention is drawn as an alignment: the source on top, the target below;
* the model view: every layer x head as a thumbnail (one pixel block per weight, same colours); a click
  opens that layer and head in the other views.

Hovering a query token (a row label, a token of the query sentence or of the head view) highlights the
keys it attends to in the key sentence, in orange with opacity = weight. The URL fragment selects the
state, so a page can be opened directly on a view: ``viewer.html#kind=cross&layer=1&head=2&focus=3&heads=0,2``
(``focus`` = the hovered query, ``heads`` = the heads the head view draws). JavaScript errors are shown
in the page (``#errors``) so that a headless browser's DOM reveals them.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from attnkit.viz.weights import KIND_TITLES, AttentionMaps

CELL_PX = 28  # matrix cells of short texts; smaller (down to MIN_CELL_PX) when the matrix would pass MATRIX_PX
MIN_CELL_PX = 10
MATRIX_PX = 640
THUMB_PX = 96  # model view thumbnails: about this size (whole pixels per weight)
LINE_PX = 8.0  # head view: a weight of 1 is a line this wide; lines under MIN_LINE_PX are not drawn
MIN_LINE_PX = 0.1
# One colour per head (cycled past ten): the Tableau 10 palette.
HEAD_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                "#9c755f", "#bab0ac"]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>attnkit attention viewer: __TITLE__</title>
<style>
body { font-family: sans-serif; margin: 12px; color: #222; background: #fff; }
#controls { margin-bottom: 8px; } #controls label { margin-right: 14px; }
#status { font-size: 12px; color: #555; margin: 4px 0 8px; }
#errors { color: #b00; font-weight: bold; white-space: pre-wrap; }
.sentence { margin: 6px 0; line-height: 1.9; max-width: 1200px; }
.sentence span { padding: 2px 3px; margin: 1px; border-radius: 3px; cursor: default; }
#queries span:hover, #queries span.focus { outline: 2px solid #d60; }
#legend { font-size: 12px; display: flex; align-items: center; gap: 6px; margin: 4px 0; }
#legend .bar { width: 240px; height: 14px; border: 1px solid #999;
  background: linear-gradient(to right, rgb(255,255,255), rgb(0,0,255)); position: relative; }
#legend .ticks { width: 240px; display: flex; justify-content: space-between; font-size: 10px; color: #444; }
#views { display: flex; gap: 36px; align-items: flex-start; flex-wrap: wrap; }
.vt { font-size: 13px; font-weight: bold; margin: 8px 0 4px; }
#matrix { display: grid; justify-content: start; gap: 0; margin-top: 4px; }
#matrix div { box-sizing: border-box; }
#matrix div.rl { width: auto; min-width: 40px; padding-right: 4px; font-size: 12px; text-align: right;
  white-space: nowrap; overflow: hidden; cursor: default; }
#matrix div.cl { height: auto; font-size: 12px; writing-mode: vertical-rl; transform: rotate(180deg);
  white-space: nowrap; overflow: hidden; max-height: 90px; }
#matrix div.rl.focus { background: #fd8; }
#heads label { font-size: 12px; margin-right: 8px; white-space: nowrap; }
#heads .sw { display: inline-block; width: 10px; height: 10px; margin-right: 2px; }
#headview text { font-size: 12px; cursor: default; }
#headview text.focus { font-weight: bold; fill: #d60; }
#modelview { display: grid; gap: 6px; justify-content: start; }
#modelview .thumb { cursor: pointer; border: 2px solid transparent; padding: 1px; font-size: 10px; text-align: center; }
#modelview .thumb.sel { border-color: #d60; }
#modelview canvas { image-rendering: pixelated; display: block; border: 1px solid #ccc; }
</style></head>
<body>
<div id="errors"></div>
<h3>__TITLE__</h3>
<div id="controls">
 <label>model part <select id="kind"></select></label>
 <label>layer <select id="layer"></select></label>
 <label>head <select id="head"></select></label>
</div>
<div id="legend"><span>weight</span><div><div class="bar"></div><div class="ticks"><span>0</span><span>0.25</span>
<span>0.5</span><span>0.75</span><span>1</span></div></div>
<span>cell colour = weight (white 0 to blue 1); head view line width = weight x __LINE__ px</span></div>
<div id="status"></div>
<div>queries (hover one): <div id="queries" class="sentence"></div></div>
<div>keys it attends to: <div id="keys" class="sentence"></div></div>
<div id="views">
 <div><div class="vt" id="matrix-title"></div><div id="matrix"></div></div>
 <div><div class="vt" id="head-title"></div><div id="heads"></div><svg id="headview"></svg></div>
</div>
<div id="model-part"><div class="vt" id="model-title"></div><div id="modelview"></div></div>
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
  const LINE = DATA.line, MIN_LINE = DATA.min_line;
  const COLOURS = DATA.colours;
  const state = { kind: DATA.kinds[0].kind, layer: 0, head: 0, focus: -1, heads: null };
  const $ = id => document.getElementById(id);

  function kindData() { return DATA.kinds.find(k => k.kind === state.kind); }
  function weightOf(k, l, h, q, j) { return k.w[l][h][q][j] / 1000; }
  function weight(k, q, j) { return weightOf(k, state.layer, state.head, q, j); }
  // Cells as large as reads at a glance, smaller for long texts so that the matrix stays on screen.
  function cellSize(k) {
    const n = Math.max(k.queries.length, k.keys.length);
    return Math.max(DATA.min_cell, Math.min(DATA.cell, Math.floor(DATA.matrix_px / n)));
  }
  function fill(sel, n, value) {
    sel.innerHTML = "";
    for (let i = 0; i < n; i++) {
      const o = document.createElement("option"); o.value = i; o.textContent = i; sel.appendChild(o);
    }
    sel.value = value;
  }
  function allHeads(k) { return Array.from({length: k.heads}, (_, h) => h); }
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.has("kind") && DATA.kinds.some(k => k.kind === p.get("kind"))) state.kind = p.get("kind");
    const k = kindData();
    const clamp = (v, n) => Math.max(0, Math.min(n - 1, parseInt(v, 10) || 0));
    if (p.has("layer")) state.layer = clamp(p.get("layer"), k.layers);
    if (p.has("head")) state.head = clamp(p.get("head"), k.heads);
    if (p.has("focus")) state.focus = Math.min(parseInt(p.get("focus"), 10), k.queries.length - 1);
    state.heads = p.has("heads") ? p.get("heads").split(",").filter(x => x !== "").map(x => clamp(x, k.heads))
                                 : allHeads(k);
  }
  function writeHash() {
    if (location.protocol === "about:") return;  // a srcdoc frame (attnkit serve's page) has no URL to keep
    history.replaceState(null, "", "#kind=" + state.kind + "&layer=" + state.layer + "&head=" + state.head +
      (state.focus >= 0 ? "&focus=" + state.focus : "") + "&heads=" + state.heads.join(","));
  }
  function color(w) { const c = Math.round(255 * (1 - w)); return "rgb(" + c + "," + c + ",255)"; }

  // ---- the matrix of one layer and head
  function renderMatrix(k) {
    const m = $("matrix"), cell = cellSize(k);
    $("matrix-title").textContent = "attention matrix: layer " + state.layer + ", head " + state.head +
      " (rows: queries, columns: keys)";
    m.innerHTML = "";
    m.style.gridTemplateColumns = "auto repeat(" + k.keys.length + ", " + cell + "px)";
    m.appendChild(document.createElement("div"));
    k.keys.forEach(t => {
      const d = document.createElement("div"); d.className = "cl"; d.textContent = t; d.style.width = cell + "px";
      m.appendChild(d);
    });
    k.queries.forEach((t, q) => {
      const r = document.createElement("div");
      r.className = "rl"; r.textContent = t; r.dataset.q = q; r.style.lineHeight = cell + "px";
      r.addEventListener("mouseenter", () => setFocus(q));
      m.appendChild(r);
      for (let j = 0; j < k.keys.length; j++) {
        const c = document.createElement("div");
        const w = weight(k, q, j);
        c.className = "cell"; c.style.background = color(w); c.dataset.q = q; c.dataset.k = j;
        c.style.width = cell + "px"; c.style.height = cell + "px";
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
      m.dataset.left = r.left + window.scrollX; m.dataset.top = r.top + window.scrollY;
      m.dataset.cell = cellSize(kindData());
    }
  }

  // ---- the head view: lines from each query to the keys it attends to, one colour per head, width = weight.
  // Self-attention: queries in a column on the left, keys on the right (as bertviz draws it). Encoder-decoder
  // attention: the source on top, the target below, as an alignment is drawn.
  function tokenBoxes(k, across) {
    const n = Math.max(k.queries.length, k.keys.length);
    if (!across) return {step: 20, width: 0};
    const longest = Math.max(...k.queries.concat(k.keys).map(t => t.length));
    return {step: Math.max(26, Math.min(90, 7 * longest + 10)), width: n};
  }
  function esc(t) {
    return t.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }
  // SVG markup set as innerHTML of the inline <svg> (parsed into the SVG namespace, no namespace URI needed).
  function svgText(x, y, t, anchor, attrs) {
    return '<text x="' + x + '" y="' + y + '" text-anchor="' + anchor + '" dominant-baseline="middle" ' + attrs + ">" +
      esc(t) + "</text>";
  }
  function renderHeadControls(k) {
    const box = $("heads");
    box.innerHTML = "heads: ";
    for (let h = 0; h < k.heads; h++) {
      const l = document.createElement("label"), c = document.createElement("input");
      const sw = document.createElement("span");
      c.type = "checkbox"; c.id = "hv-h" + h; c.checked = state.heads.includes(h);
      c.addEventListener("change", () => {
        state.heads = allHeads(k).filter(x => x === h ? c.checked : state.heads.includes(x));
        renderHeadView(k); writeHash();
      });
      sw.className = "sw"; sw.style.background = COLOURS[h % COLOURS.length];
      l.appendChild(c); l.appendChild(sw); l.appendChild(document.createTextNode(h)); box.appendChild(l);
    }
  }
  function renderHeadView(k) {
    const svg = $("headview"), across = k.kind === "cross", b = tokenBoxes(k, across);
    $("head-title").textContent = across
      ? "source / target alignment, layer " + state.layer +
        ": each target token (below) to the source tokens it attends to (above)"
      : "head view, layer " + state.layer + ": each query (left) to the keys it attends to (right)";
    const pad = 12, gap = across ? 140 : 160, parts = [];
    const focus = q => (q === state.focus ? ' class="focus"' : "");
    let qx, qy, kx, ky, width, height;
    if (across) {
      const top = 40;
      width = pad * 2 + b.step * b.width; height = top + gap + 40;
      kx = j => pad + (j + 0.5) * b.step; ky = () => top; qx = q => pad + (q + 0.5) * b.step; qy = () => top + gap;
      k.keys.forEach((t, j) => parts.push(svgText(kx(j), ky() - 14, t, "middle", 'data-k="' + j + '"')));
      k.queries.forEach((t, q) => parts.push(svgText(qx(q), qy() + 14, t, "middle", 'data-q="' + q + '"' + focus(q))));
    } else {
      const label = 8 * Math.max(...k.queries.concat(k.keys).map(t => t.length)) + 8;
      width = 2 * label + gap + 2 * pad; height = pad * 2 + b.step * Math.max(k.queries.length, k.keys.length);
      qx = () => pad + label; qy = q => pad + (q + 0.5) * b.step; kx = () => pad + label + gap; ky = qy;
      k.queries.forEach((t, q) => parts.push(svgText(qx() - 4, qy(q), t, "end", 'data-q="' + q + '"' + focus(q))));
      k.keys.forEach((t, j) => parts.push(svgText(kx() + 4, ky(j), t, "start", 'data-k="' + j + '"')));
    }
    const queries = state.focus >= 0 ? [state.focus] : k.queries.map((_, q) => q);
    for (const h of state.heads) {
      for (const q of queries) {
        for (let j = 0; j < k.keys.length; j++) {
          const w = weightOf(k, state.layer, h, q, j);
          if (w * LINE < MIN_LINE) continue;  // thinner than a hairline: not drawn
          parts.push('<line x1="' + qx(q) + '" y1="' + (qy(q) + (across ? -8 : 0)) + '" x2="' + kx(j) + '" y2="' +
            (ky(j) + (across ? 8 : 0)) + '" stroke="' + COLOURS[h % COLOURS.length] + '" stroke-opacity="0.6" ' +
            'stroke-width="' + (w * LINE).toFixed(3) + '" data-h="' + h + '" data-q="' + q + '" data-k="' + j +
            '" data-w="' + w.toFixed(3) + '"></line>');
        }
      }
    }
    svg.setAttribute("width", width); svg.setAttribute("height", height);
    svg.innerHTML = parts.join("");
  }

  // ---- the model view: every layer x head of this part as a thumbnail (one pixel per weight); click one to open it
  function renderModelView(k) {
    const mv = $("modelview");
    $("model-title").textContent = "model view: " + k.title + ", " + k.layers + " layers (rows) x " + k.heads +
      " heads (columns); click one to open it";
    mv.innerHTML = "";
    const scale = Math.max(1, Math.floor(DATA.thumb_px / Math.max(k.queries.length, k.keys.length)));
    mv.style.gridTemplateColumns = "repeat(" + k.heads + ", auto)";
    for (let l = 0; l < k.layers; l++) {
      for (let h = 0; h < k.heads; h++) {
        const t = document.createElement("div"), c = document.createElement("canvas");
        t.className = "thumb" + (l === state.layer && h === state.head ? " sel" : "");
        t.dataset.layer = l; t.dataset.head = h; t.title = "layer " + l + ", head " + h;
        c.width = k.keys.length; c.height = k.queries.length;
        c.style.width = k.keys.length * scale + "px"; c.style.height = k.queries.length * scale + "px";
        const ctx = c.getContext("2d"), img = ctx.createImageData(c.width, c.height);
        for (let q = 0; q < c.height; q++) {
          for (let j = 0; j < c.width; j++) {
            const v = Math.round(255 * (1 - weightOf(k, l, h, q, j))), i = 4 * (q * c.width + j);
            img.data[i] = v; img.data[i + 1] = v; img.data[i + 2] = 255; img.data[i + 3] = 255;
          }
        }
        ctx.putImageData(img, 0, 0);
        t.appendChild(c); t.appendChild(document.createTextNode("L" + l + " H" + h));
        t.addEventListener("click", () => {
          state.layer = l; state.head = h; render(); $("matrix").scrollIntoView({block: "nearest"});
        });
        mv.appendChild(t);
      }
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
    const changed = state.focus !== q;
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
    if (changed || !$("headview").hasChildNodes()) renderHeadView(k);
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
    renderSentences(k); renderMatrix(k); renderHeadControls(k); renderHeadView(k); renderModelView(k);
    setFocus(state.focus); measure();
  }
  const ks = $("kind");
  DATA.kinds.forEach(k => {
    const o = document.createElement("option"); o.value = k.kind; o.textContent = k.title; ks.appendChild(o);
  });
  const hv = $("headview");  // hovering a query token of the head view shows its lines only; leaving shows all
  hv.addEventListener("mouseover", e => {
    const q = e.target.dataset && e.target.dataset.q;
    if (q !== undefined) setFocus(+q);
  });
  hv.addEventListener("mouseleave", () => { if (state.focus >= 0) setFocus(-1); });
  readHash();
  ks.value = state.kind;
  ks.addEventListener("change", () => {
    state.kind = ks.value; state.layer = 0; state.head = 0; state.focus = -1; state.heads = allHeads(kindData());
    render();
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
    return {"model": maps.model, "cell": CELL_PX, "min_cell": MIN_CELL_PX, "matrix_px": MATRIX_PX,
            "thumb_px": THUMB_PX, "line": LINE_PX, "min_line": MIN_LINE_PX, "colours": HEAD_COLOURS, "kinds": kinds}


def viewer_html(maps: AttentionMaps) -> str:
    """The viewer page for ``maps`` (one self-contained HTML document; ``attnkit serve`` shows it in a frame)."""
    if not maps.maps:
        raise ValueError("no attention weights to show")
    data = json.dumps(viewer_data(maps), separators=(",", ":"))
    # Inside <script> only "</" could end the element early; JSON allows "<\\/" for it.
    data = data.replace("</", "<\\/")
    return (_TEMPLATE.replace("__TITLE__", html.escape(f"{maps.model} attention"))
            .replace("__LINE__", f"{LINE_PX:g}").replace("__DATA__", data))


def write_viewer(maps: AttentionMaps, path: str | Path) -> Path:
    """Write the viewer for ``maps`` to ``path`` (one HTML file) and return the path."""
    page = viewer_html(maps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
