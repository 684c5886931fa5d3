"""smoothed_cross_entropy against torch.nn.functional.cross_entropy(label_smoothing, ignore_index)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.layers.losses import smoothed_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("ignore_index", [0, -100])
def test_matches_torch_cross_entropy(smoothing: float, ignore_index: int) -> None:
    logits = torch.randn(3, 7, 11, dtype=torch.float64)
    targets = torch.randint(1, 11, (3, 7))
    targets[0, 4:] = ignore_index
    targets[2, 1] = ignore_index
    total, count = smoothed_cross_entropy(logits, targets, smoothing=smoothing, ignore_index=ignore_index)
    ref = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), label_smoothing=smoothing,
                          ignore_index=ignore_index, reduction="mean")
    assert int(count) == int((targets != ignore_index).sum())
    torch.testing.assert_close((total / count).double(), ref, rtol=1e-6, atol=1e-6)


def test_sum_is_sum_of_rows_and_gradient_matches() -> None:
    logits = torch.randn(10, 5, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    total, _ = smoothed_cross_entropy(logits, targets, smoothing=0.1, ignore_index=None)
    ref = F.cross_entropy(logits, targets, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(total, ref)
    g1 = torch.autograd.grad(total, logits)[0]
    g2 = torch.autograd.grad(ref, logits)[0]
    torch.testing.assert_close(g1, g2)


def test_bf16_logits_are_computed_in_float32() -> None:
    logits = torch.randn(4, 9, 13).to(torch.bfloat16)
    targets = torch.randint(0, 13, (4, 9))
    total, count = smoothed_cross_entropy(logits, targets, smoothing=0.1)
    assert total.dtype == torch.float32
    ref = F.cross_entropy(logits.float().reshape(-1, 13), targets.reshape(-1), label_smoothing=0.1)
    torch.testing.assert_close(total / count, ref)


def test_shape_errors_name_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        smoothed_cross_entropy(torch.randn(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="smoothing"):
        smoothed_cross_entropy(torch.randn(2, 5), torch.zeros(2, dtype=torch.long), smoothing=1.0)
