"""PNG heatmaps: one grid per kind, single heads on request, readable labels for long inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.viz.grid import label_step, plot_head, save_pngs
from attnkit.viz.weights import AttentionMap, AttentionMaps


def _maps(t: int = 5) -> AttentionMaps:
    w = torch.softmax(torch.randn(2, 3, t, t), -1)
    labels = [f"tok{i}" for i in range(t)]
    return AttentionMaps("test", [AttentionMap("encoder", w, labels, labels),
                                  AttentionMap("cross", w[:, :, :3], labels[:3], labels)])


def test_grids_and_single_heads(tmp_path: Path) -> None:
    paths = save_pngs(_maps(), tmp_path, layer=1)
    names = sorted(p.name for p in paths)
    assert names == sorted(["encoder.png", "cross.png"] + [f"{k}-layer1-head{h}.png" for k in ("encoder", "cross")
                                                           for h in range(3)])
    for p in paths:
        img = np.asarray(Image.open(p).convert("L"))
        assert img.shape[0] > 200 and img.shape[1] > 200 and img.std() > 10  # not blank
    only = {p.name for p in save_pngs(_maps(), tmp_path / "c", head=2)}
    assert only == {"encoder.png", "cross.png"} | {f"{k}-layer{i}-head2.png" for k in ("encoder", "cross")
                                                   for i in range(2)}


def test_single_head_draws_the_weights(tmp_path: Path) -> None:
    """A one-hot head draws a bright diagonal (viridis: 1 is light, 0 dark)."""
    t = 6
    w = torch.zeros(1, 1, t, t)
    w[0, 0] = torch.eye(t)
    labels = [f"w{i}" for i in range(t)]
    path = plot_head(AttentionMap("encoder", w, labels, labels), 0, 0, tmp_path / "h.png")
    img = np.asarray(Image.open(path).convert("L")).astype(float)
    assert img.max() - img.min() > 150
    with pytest.raises(ValueError, match="layers 0..0 and heads 0..0"):
        plot_head(AttentionMap("encoder", w, labels, labels), 1, 0, tmp_path / "x.png")


def test_long_inputs_keep_labels_readable(tmp_path: Path) -> None:
    assert label_step(10, 60) == 1 and label_step(200, 60) == 4 and label_step(61, 60) == 2
    amap = _maps(t=150).get("encoder")
    img = Image.open(plot_head(amap, 0, 0, tmp_path / "long.png"))
    assert max(img.size) <= 24 * 120  # the figure size is capped (24 inches at 120 dpi)
