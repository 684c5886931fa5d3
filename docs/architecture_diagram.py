"""Draw docs/architecture.png: attnkit's layers (from the import-linter contract in pyproject.toml) and the
imports that actually exist between them (read from the code by grimp, import-linter's graph library).

    .venv/bin/python docs/architecture_diagram.py            # writes docs/architecture.png
"""

from __future__ import annotations

from pathlib import Path

import grimp
import matplotlib
import tomllib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Packages outside the layers contract, drawn beside the layer that uses them most.
SIDE = ["attnkit.data", "attnkit.tokenizers", "attnkit.config_io | attnkit.errors"]


def layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    contract = next(c for c in config if c["type"] == "layers")
    rows = [[m.strip() for m in layer.split("|")] for layer in contract["layers"]]
    # models/hf sits above the models it converts: show it as its own box in the models row.
    for row in rows:
        if "attnkit.models" in row:
            row.insert(0, "attnkit.models.hf")
    return rows


def group_of(module: str, groups: list[str]) -> str | None:
    best = None
    for g in groups:
        if module == g or module.startswith(g + "."):
            if best is None or len(g) > len(best):
                best = g
    return best


def main() -> None:
    rows = layers()
    side = [[m.strip() for m in s.split("|")] for s in SIDE]
    groups = [m for row in rows for m in row] + [m for s in side for m in s]
    graph = grimp.build_graph("attnkit")
    edges: dict[tuple[str, str], int] = {}
    for module in graph.modules:
        src = group_of(module, groups)
        for imported in graph.find_modules_directly_imported_by(module):
            dst = group_of(imported, groups)
            if src and dst and src != dst:
                edges[(src, dst)] = edges.get((src, dst), 0) + 1

    fig, ax = plt.subplots(figsize=(11, 7.5))
    pos: dict[str, tuple[float, float]] = {}
    n = len(rows)
    for i, row in enumerate(rows):
        y = n - i
        for j, name in enumerate(row):
            x = (j - (len(row) - 1) / 2) * 2.4
            pos[name] = (x, y)
    for k, names in enumerate(side):
        for j, name in enumerate(names):
            pos[name] = (6.6, n - 2.2 - k * 1.6 - j * 0.75)
    for name, (x, y) in pos.items():
        is_side = any(name in s for s in side)
        ax.add_patch(FancyBboxPatch((x - 1.0, y - 0.25), 2.0, 0.5, boxstyle="round,pad=0.05",
                                    facecolor="#eef3fb" if not is_side else "#f4f4f4",
                                    edgecolor="#4a6fa5" if not is_side else "#999999"))
        ax.text(x, y, name.replace("attnkit.", ""), ha="center", va="center", fontsize=10)
    for (src, dst), count in sorted(edges.items()):
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        up = y1 > y0 + 0.01 and not any(dst in s for s in side)
        ax.add_patch(FancyArrowPatch((x0, y0 - 0.28 if y1 < y0 else y0), (x1, y1 + 0.28 if y1 < y0 else y1),
                                     arrowstyle="-|>", mutation_scale=10, lw=0.4 + 0.15 * min(count, 12),
                                     color="#c0392b" if up else "#7f8c8d", alpha=0.55,
                                     connectionstyle="arc3,rad=0.08"))
    ax.set_xlim(-5.5, 8.2)
    ax.set_ylim(0, n + 1)
    ax.axis("off")
    ax.set_title("attnkit's layers: each imports only those below it (arrows: imports found in the code, "
                 "width ~ count)", fontsize=10)
    out = ROOT / "docs" / "architecture.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out} ({len(edges)} group-to-group import edges)")


if __name__ == "__main__":
    main()
