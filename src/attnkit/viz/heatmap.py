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
    title: str = "",
) -> Path:
    """Write a heatmap of attention ``weights`` [T, S] (row t: how target token t attends over the source)
    with source tokens along x and target tokens along y; returns the path."""
    w = weights.detach().float().cpu().numpy() if isinstance(weights, Tensor) else np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"weights must be [T, S] = [{len(tgt_tokens)}, {len(src_tokens)}], got {w.shape}")
    t, s = w.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * s + 2), max(3.0, 0.4 * t + 1.5)))
    im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(float(w.max()), 1e-9))
    ax.set_xticks(range(s), list(src_tokens), rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(t), list(tgt_tokens), fontsize=9)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
