"""Seeing attention: collect every layer's and head's weights (``weights``), PNG heatmaps (``grid``) and a
self-contained HTML viewer (``html``); ``load`` opens runs and Hugging Face directories for ``attnkit viz``."""

from attnkit.viz.grid import plot_grid, plot_head, save_pngs
from attnkit.viz.html import write_viewer
from attnkit.viz.weights import (
    KINDS,
    AttentionMap,
    AttentionMaps,
    bert_weights,
    gpt_weights,
    rnn_weights,
    to_maps,
    transformer_weights,
)

__all__ = [
    "KINDS",
    "AttentionMap",
    "AttentionMaps",
    "bert_weights",
    "gpt_weights",
    "plot_grid",
    "plot_head",
    "rnn_weights",
    "save_pngs",
    "to_maps",
    "transformer_weights",
    "write_viewer",
]
