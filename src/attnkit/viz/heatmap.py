"""Attention heatmaps as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_attention(
    weights: Tensor | np.ndarray, src_tokens: Sequence[str], tgt_tokens: Sequence[str], path: str | Path,
    title: str = "", *, xlabel: str = "source", ylabel: str = "target", vmax: float | None = None,
    max_labels: int = 60,
) -> Path:
    """Write a heatmap of attention ``weights`` [T, S] (row t: how target token t attends over the source)
    with source tokens along x and target tokens along y; returns the path. ``vmax``: top of the colour
    scale (default: the largest weight); longer inputs than ``max_labels`` show every k-th label and
    the figure's sides are capped at 24 inches, so labels stay readable."""
    w = weights.detach().float().cpu().numpy() if isinstance(weights, Tensor) else np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"weights must be [T, S] = [{len(tgt_tokens)}, {len(src_tokens)}], got {w.shape}")
    t, s = w.shape
    fig, ax = plt.subplots(figsize=(min(max(4.0, 0.45 * min(s, max_labels) + 2), 24.0),
                                    min(max(3.0, 0.4 * min(t, max_labels) + 1.5), 24.0)))
    top = max(float(w.max()), 1e-9) if vmax is None else vmax
    im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=top, interpolation="nearest")
    sx, sy = -(-s // max_labels), -(-t // max_labels)  # show every k-th label
    ax.set_xticks(range(0, s, sx), list(src_tokens)[::sx], rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(0, t, sy), list(tgt_tokens)[::sy], fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
