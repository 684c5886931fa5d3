"""DerivedTensor: a copy derived from parameters, reused only inside a frozen-weights block and dropped
whenever the weights may have changed (issue 13)."""

import torch

from attnkit.derived import DerivedTensor, frozen, frozen_weights


def _stack(*ts: torch.Tensor) -> torch.Tensor:
    return torch.cat(ts)


def test_copy_is_reused_until_a_source_changes_in_place() -> None:
    a, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(2, 4))
    d = DerivedTensor(_stack)
    with frozen_weights():
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
    with frozen_weights():
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


def test_copies_live_only_inside_a_block_and_nested_blocks_share_them() -> None:
    w = torch.nn.Parameter(torch.randn(3, 3))
    d = DerivedTensor(lambda t: t * 2)
    assert not frozen()
    outside = d.get((w,))
    assert d.value is None and d.get((w,)) is not outside  # no cache outside a block
    with frozen_weights():
        first = d.get((w,))
        with frozen_weights():
            assert frozen() and d.get((w,)) is first
        assert d.get((w,)) is first  # the inner block's end keeps the outer block's copy
    assert not frozen() and d.value is None  # the outermost block's end frees it


def test_optimizer_steps_and_data_writes() -> None:
    """Fused AdamW writes without bumping the version counter: its step (any optimizer's) drops copies."""
    w = torch.nn.Parameter(torch.randn(4, 4))
    w.grad = torch.ones(4, 4)
    d = DerivedTensor(lambda t: t.t().contiguous())
    opt = torch.optim.AdamW([w], lr=0.1, fused=True)
    with frozen_weights():
        d.get((w,))
        version = w._version
        opt.step()
        assert w._version == version  # the reason a version counter is not enough
        assert torch.equal(d.get((w,)), w.detach().t())
    with frozen_weights():
        d.get((w,))
    with torch.no_grad():
        w.data.copy_(torch.zeros(4, 4))  # between blocks: the next block starts without copies
    with frozen_weights():
        assert torch.equal(d.get((w,)), torch.zeros(4, 4))
