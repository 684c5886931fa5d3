"""The fp32 inference kernel (attnkit.kernels): the choice per CPU, and both kernels against float64 math."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.derived import frozen_weights
from attnkit.kernels import (
    ENV_VAR,
    FP32_KERNELS,
    default_fp32_kernel,
    fp32_kernel,
    linear,
    set_fp32_kernel,
    using_fp32_kernel,
)
from attnkit.layers.linear import FastLinear


def test_default_follows_the_cpu_vendor_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_fp32_kernel(vendor="AuthenticAMD", onednn=True) == "onednn"
    assert default_fp32_kernel(vendor="GenuineIntel", onednn=True) == "mkl"
    assert default_fp32_kernel(vendor="AuthenticAMD", onednn=False) == "mkl"  # PyTorch built without oneDNN
    monkeypatch.setenv(ENV_VAR, "MKL")
    assert default_fp32_kernel(vendor="AuthenticAMD", onednn=True) == "mkl"
    monkeypatch.setenv(ENV_VAR, "cublas")
    with pytest.raises(ValueError, match=r"ATTNKIT_FP32_KERNEL='cublas': expected one of mkl, onednn"):
        default_fp32_kernel()


def test_set_and_restore() -> None:
    before = fp32_kernel()
    with using_fp32_kernel("mkl"):
        assert fp32_kernel() == "mkl"
        with using_fp32_kernel("onednn"):
            assert fp32_kernel() == "onednn"
        assert fp32_kernel() == "mkl"
    assert fp32_kernel() == before
    with pytest.raises(ValueError, match="unknown fp32 kernel 'fast'"):
        set_fp32_kernel("fast")


def _bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Rounding bound of an fp32 dot product of length K: K * eps * sum |x_k w_k| (elementwise, generous)."""
    return x.shape[-1] * torch.finfo(torch.float32).eps * (x.double().abs() @ w.double().abs().T) + 1e-30


@pytest.mark.parametrize("kernel", FP32_KERNELS)
@pytest.mark.parametrize("shape", [(1, 64), (3, 7, 64), (0, 64), (64,)])
def test_inference_products_equal_float64_within_rounding(kernel: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x, w, b = torch.randn(*shape), torch.randn(96, 64), torch.randn(96)
    want = x.double() @ w.double().T + b.double()
    with using_fp32_kernel(kernel), torch.inference_mode():
        got = linear(x, w, b)
        no_bias = linear(x, w)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert bool(((got.double() - want).abs() <= _bound(x, w)).all())
    assert bool(((no_bias.double() - (want - b.double())).abs() <= _bound(x, w)).all())


@pytest.mark.parametrize("kernel", FP32_KERNELS)
def test_training_and_other_dtypes_take_f_linear_exactly(kernel: str) -> None:
    torch.manual_seed(0)
    x, w = torch.randn(5, 32), torch.randn(16, 32, requires_grad=True)
    with using_fp32_kernel(kernel):
        y = linear(x, w)  # autograd on: the reference path, bit for bit
        assert torch.equal(y, F.linear(x, w)) and y.requires_grad
        y.sum().backward()
        torch.testing.assert_close(w.grad, x.sum(0).expand(16, 32), atol=0, rtol=0)
        with torch.no_grad():
            xd, wd = x.double(), w.detach().double()
            assert torch.equal(linear(xd, wd), F.linear(xd, wd))  # float64: oneDNN has no such kernel


def test_fast_linear_with_onednn_reads_the_stored_weight_without_a_copy() -> None:
    torch.manual_seed(0)
    ref = torch.nn.Linear(64, 256)
    lin = FastLinear.like(ref)
    x = torch.randn(1, 64)
    with using_fp32_kernel("onednn"), torch.inference_mode(), frozen_weights():
        got = lin(x)
        assert lin._packed.value is None  # no [in, out] copy
    want = x.double() @ ref.weight.double().T + ref.bias.double()
    assert bool(((got.double() - want).abs() <= _bound(x, ref.weight.detach())).all())
    with using_fp32_kernel("mkl"), torch.inference_mode(), frozen_weights():
        lin(x)
        assert lin._packed.value is not None  # the mkl kernel's one-row copy
