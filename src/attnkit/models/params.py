"""Counting a model's parameters: the one helper behind every figure attnkit prints."""

from __future__ import annotations

from torch import nn


def num_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``, each tensor counted once (a tied embedding and output
    projection count as one)."""
    return sum(p.numel() for p in module.parameters())
