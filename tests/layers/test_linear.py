"""FastLinear: nn.Linear's parameters and results, with a cached [in, out] weight for one-row products."""

import pytest
import torch
from torch import nn

from attnkit.derived import frozen_weights
from attnkit.kernels import using_fp32_kernel
from attnkit.layers.linear import FastLinear, use_fast_linears


@pytest.fixture(autouse=True)
def _mkl_kernel():  # noqa: ANN202
    """The [in, out] copies belong to the "mkl" kernel (oneDNN reads the stored weight; tests/test_kernels.py)."""
    with using_fp32_kernel("mkl"):
        yield


def _pair(bias: bool, d_in: int = 16, d_out: int = 48) -> tuple[nn.Linear, FastLinear]:
    torch.manual_seed(0)
    ref = nn.Linear(d_in, d_out, bias=bias)
    return ref, FastLinear.like(ref)


def test_one_row_uses_the_packed_copy_and_equals_nn_linear() -> None:
    for bias in (True, False):
        ref, lin = _pair(bias)
        x = torch.randn(1, 1, 16)
        with torch.inference_mode(), frozen_weights():
            got = lin(x)
            assert lin._packed.value is not None and lin._packed.value.shape == (16, 48)
        torch.testing.assert_close(got, ref(x).detach(), atol=1e-6, rtol=1e-6)
        assert got.shape == (1, 1, 48)


def test_packed_copy_follows_weight_updates_and_release() -> None:
    ref, lin = _pair(True)
    x = torch.randn(1, 16)
    with torch.no_grad(), frozen_weights():
        lin(x)
        ref.weight.mul_(2.0)  # the same Parameter: an in-place update (as an optimizer step)
        torch.testing.assert_close(lin(x), ref(x), atol=1e-6, rtol=1e-6)
        lin.release()
        assert lin._packed.value is None
    with torch.no_grad():
        lin(x)
    assert lin._packed.value is None  # outside a frozen-weights block: F.linear, no copy


def test_training_and_many_rows_take_the_plain_path() -> None:
    ref, lin = _pair(True)
    x = torch.randn(1, 16)
    lin(x).sum().backward()  # autograd on: no packed copy, gradients reach the shared parameters
    assert lin._packed.value is None and ref.weight.grad is not None
    with torch.no_grad(), frozen_weights():
        lin(torch.randn(5, 16))
        assert lin._packed.value is None
        narrow = FastLinear(48, 16)  # out < in: the [out, in] layout is the faster one
        narrow(torch.randn(1, 48))
        assert narrow._packed.value is None


def test_use_fast_linears_keeps_parameters_and_ties() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    model[2].weight = nn.Parameter(model[0].weight.t().clone())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tied = model[0].weight
    use_fast_linears(model)
    assert isinstance(model[0], FastLinear) and isinstance(model[2], FastLinear)
    assert model[0].weight is tied
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
