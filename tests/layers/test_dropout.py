"""attnkit's Dropout: nn.Dropout's distribution and gradient with a cheaper CPU mask."""

import pytest
import torch
from torch import nn

from attnkit.layers.dropout import Dropout


def test_keeps_one_minus_p_scales_the_rest_and_is_identity_in_eval() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.3)
    x = torch.rand(400, 1000) + 0.5  # no zeros: a zero in the output means dropped
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 400k draws: standard error 0.0007
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    assert torch.equal(drop.eval()(x), x)
    assert isinstance(drop, nn.Dropout) and drop.p == 0.3


def test_gradient_is_the_forward_mask_times_the_scale() -> None:
    torch.manual_seed(1)
    x = torch.ones(64, 50, requires_grad=True)
    g = torch.randn(64, 50)
    y = Dropout(0.25)(x)  # with x = 1, y is exactly mask / (1 - p)
    (y * g).sum().backward()
    torch.testing.assert_close(x.grad, g * y.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_edge_probabilities_match_nn_dropout(p: float) -> None:
    x = torch.randn(10, 10)
    torch.testing.assert_close(Dropout(p)(x), nn.Dropout(p)(x))


def test_same_seed_same_mask_so_resumed_training_repeats_itself() -> None:
    x = torch.randn(32, 32)
    torch.manual_seed(5)
    a = Dropout(0.5)(x)
    torch.manual_seed(5)
    assert torch.equal(Dropout(0.5)(x), a)
