"""DerivedTensor: a cached copy of parameters that is made again whenever a source changes."""

import torch

from attnkit.derived import DerivedTensor


def _stack(*ts: torch.Tensor) -> torch.Tensor:
    return torch.cat(ts)


def test_copy_is_reused_until_a_source_changes_in_place() -> None:
    a, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(2, 4))
    d = DerivedTensor(_stack)
    first = d.get((a, b))
    assert d.get((a, b)) is first
    with torch.no_grad():
        b.add_(1.0)  # as an optimizer step does
    second = d.get((a, b))
    assert second is not first
    assert torch.equal(second, torch.cat([a, b]).detach())


def test_replaced_source_release_and_no_autograd_history() -> None:
    lin = torch.nn.Linear(4, 4)
    d = DerivedTensor(lambda w: w.t().contiguous())
    first = d.get((lin.weight,))
    assert not first.requires_grad
    lin.weight = torch.nn.Parameter(torch.randn(4, 4))
    assert torch.equal(d.get((lin.weight,)), lin.weight.detach().t())
    d.release()
    assert d.value is None


def test_inference_mode_sources_are_never_served_stale() -> None:
    with torch.inference_mode():
        w = torch.randn(3, 3)
        d = DerivedTensor(lambda t: t * 2)
        assert torch.equal(d.get((w,)), w * 2)
        w.add_(1.0)  # no version counter to notice this: the copy is made at every call
        assert torch.equal(d.get((w,)), w * 2)
