"""PNG heatmaps of attention weights (matplotlib): one grid of all layers x heads per kind of attention,
and one large heatmap for a single head. Rows are queries, columns keys, both labelled with tokens;
long inputs keep every k-th label so that labels stay readable."""

from __future__ import annotations

import math
from pathlib import Path

from attnkit.viz.heatmap import plot_attention
from attnkit.viz.weights import KIND_TITLES, AttentionMap, AttentionMaps


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_step(n: int, max_labels: int) -> int:
    """Show every k-th of n labels so that at most ``max_labels`` are drawn."""
    return max(1, math.ceil(n / max_labels))


def _label_axes(ax, queries: list[str], keys: list[str], fontsize: float, max_labels: int) -> None:
    sq, sk = label_step(len(queries), max_labels), label_step(len(keys), max_labels)
    ax.set_yticks(range(0, len(queries), sq), [queries[i] for i in range(0, len(queries), sq)], fontsize=fontsize)
    ax.set_xticks(range(0, len(keys), sk), [keys[i] for i in range(0, len(keys), sk)], fontsize=fontsize,
                  rotation=90)


def plot_head(amap: AttentionMap, layer: int, head: int, path: str | Path, title: str | None = None) -> Path:
    """One head's weights [Tq, Tk] as a large heatmap (colour scale 0..1) with up to 60 labels per axis."""
    _check(amap, layer, head)
    return plot_attention(amap.weights[layer, head], amap.keys, amap.queries, path,
                          title or f"{KIND_TITLES[amap.kind]}, layer {layer}, head {head}",
                          xlabel="keys (attended to)", ylabel="queries", vmax=1.0, max_labels=60)


def plot_grid(amap: AttentionMap, path: str | Path, title: str | None = None) -> Path:
    """All layers (rows) x heads (columns) of one kind of attention, labels on the outer axes."""
    plt = _plt()
    n_layers, n_heads, tq, tk = amap.weights.shape
    cell = min(max(2.0, 0.12 * max(tq, tk)), 6.0)
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(cell * n_heads + 1.5, cell * n_layers + 1.2),
                             squeeze=False)
    max_labels = max(4, int(cell * 8))
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            ax.imshow(amap.weights[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest")
            _label_axes(ax, amap.queries, amap.keys, 6, max_labels)
            if head:
                ax.set_yticks([])
            if layer != n_layers - 1:
                ax.set_xticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=9)
    fig.suptitle(title or f"{KIND_TITLES[amap.kind]}: layers x heads (rows: queries, columns: keys)")
    fig.tight_layout()
    return _save(fig, plt, path)


def save_pngs(maps: AttentionMaps, out_dir: str | Path, layer: int | None = None, head: int | None = None
              ) -> list[Path]:
    """Write ``<kind>.png`` (the grid) for every kind; with ``layer`` and/or ``head``, also
    ``<kind>-layer<l>-head<h>.png`` for the selected heads (all heads of a layer, or one head of every
    layer, when only one is given)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for amap in maps.maps:
        paths.append(plot_grid(amap, out / f"{amap.kind}.png", f"{maps.model}: {KIND_TITLES[amap.kind]}"))
        if layer is None and head is None:
            continue
        n_layers, n_heads = amap.weights.shape[:2]
        layers = range(n_layers) if layer is None else [layer]
        heads = range(n_heads) if head is None else [head]
        for li in layers:
            for hi in heads:
                paths.append(plot_head(amap, li, hi, out / f"{amap.kind}-layer{li}-head{hi}.png"))
    return paths


def _check(amap: AttentionMap, layer: int, head: int) -> None:
    n_layers, n_heads = amap.weights.shape[:2]
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(
            f"{KIND_TITLES[amap.kind]} has layers 0..{n_layers - 1} and heads 0..{n_heads - 1}, "
            f"got layer {layer}, head {head}"
        )


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
