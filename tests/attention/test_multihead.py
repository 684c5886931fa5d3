import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attnkit.attention import KVCache, MultiHeadAttention, causal_mask, padding_mask
from attnkit.derived import frozen_weights


def _reference(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    """torch.nn.MultiheadAttention (batch_first) holding the same weights."""
    same = mha.kdim == mha.embed_dim and mha.vdim == mha.embed_dim
    ref = nn.MultiheadAttention(mha.embed_dim, mha.num_heads, batch_first=True, kdim=mha.kdim, vdim=mha.vdim)
    with torch.no_grad():
        if same:
            ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        else:
            ref.q_proj_weight.copy_(mha.q_proj.weight)
            ref.k_proj_weight.copy_(mha.k_proj.weight)
            ref.v_proj_weight.copy_(mha.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref.eval()


def _lengths_mask(lengths, s):
    return torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]  # (B, S) True = real


@pytest.mark.parametrize("kind", ["self", "self_padding", "causal", "causal_padding", "cross", "cross_kvdim"])
def test_matches_torch_multihead_attention(kind):
    b, t, s, e, h = 3, 5, 7, 32, 4
    kdim = vdim = None
    if kind == "cross_kvdim":
        kdim, vdim = 12, 20
    mha = MultiHeadAttention(e, h, kdim=kdim, vdim=vdim).eval()
    ref = _reference(mha)
    x = torch.randn(b, t, e)
    if kind.startswith("cross"):
        key, value = torch.randn(b, s, kdim or e), torch.randn(b, s, vdim or e)
        keep = _lengths_mask([7, 3, 5], s)
        kw, rkw = {"mask": padding_mask(keep)}, {"key_padding_mask": ~keep}
        args, rargs = (x, key, value), (x, key, value)
    else:
        args, rargs, kw, rkw = (x,), (x, x, x), {}, {}
        if "padding" in kind:
            keep = _lengths_mask([5, 2, 4], t)
            kw["mask"], rkw["key_padding_mask"] = padding_mask(keep), ~keep
        if "causal" in kind:
            kw["causal"] = True
            rkw["attn_mask"] = ~causal_mask(t)  # PyTorch: True = may NOT attend
    with torch.no_grad():
        expected, expected_w = ref(*rargs, **rkw, need_weights=True, average_attn_weights=True)
        fast = mha(*args, **kw)
        explicit = mha(*args, **kw, need_weights=True)
    assert fast.weights is None and explicit.weights.shape == (b, h, t, s if kind.startswith("cross") else t)
    torch.testing.assert_close(fast.output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit.output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit.weights.mean(1), expected_w, atol=1e-5, rtol=1e-5)


def test_gradcheck_float64_both_paths():
    mha = MultiHeadAttention(8, 2).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(_lengths_mask([4, 2], 4))
    for need in (False, True):
        assert torch.autograd.gradcheck(lambda a, need=need: mha(a, causal=True, need_weights=need).output, (x,))
        assert torch.autograd.gradcheck(
            lambda a, m, need=need: mha(a, m, mask=mask, need_weights=need).output, (x, mem)
        )


def test_causality_later_tokens_do_not_change_earlier_outputs():
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 10, 16)
    y = x.clone()
    y[:, 6:] = torch.randn(2, 4, 16)
    for need in (False, True):
        a, b = mha(x, causal=True, need_weights=need).output, mha(y, causal=True, need_weights=need).output
        torch.testing.assert_close(a[:, :6], b[:, :6])
        assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_cache_step_by_step_equals_full_recompute_and_reorder():
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 9, 16)
    full = mha(x, causal=True).output
    cache = KVCache(max_len=12)
    steps = [mha(x[:, :4], causal=True, cache=cache).output]  # a prompt of 4, then one token at a time
    steps += [mha(x[:, i : i + 1], causal=True, cache=cache).output for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    assert cache.length == 9 and cache.k.shape[2] == 12  # preallocated, written by position
    # reorder: a cache whose rows were permuted behaves as if the permuted batch had been fed
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    nxt = torch.randn(3, 1, 16)
    stepped = mha(nxt, causal=True, cache=cache).output
    recomputed = mha(torch.cat([x[index], nxt], 1), causal=True).output[:, -1:]
    torch.testing.assert_close(stepped, recomputed, atol=1e-6, rtol=1e-5)


def test_cross_attention_cache_computes_keys_once():
    mha = MultiHeadAttention(16, 2).eval()
    mem, q = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    cache = KVCache(max_len=5)
    first = mha(q, mem, cache=cache).output
    again = mha(q, torch.zeros_like(mem), cache=cache).output  # the stored memory is used
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, mha(q, mem).output)
    with pytest.raises(ValueError, match="full"):
        KVCache(2).append(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))


def test_fully_masked_query_gives_zero_not_nan():
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 3, 8)
    mask = torch.ones(2, 1, 3, 3, dtype=torch.bool)
    mask[1, :, 2] = False  # query 2 of row 1 may attend to nothing
    for need in (False, True):
        out = mha(x, mask=mask, need_weights=need)
        assert torch.isfinite(out.output).all()
        # the attention result is 0, so the output is the out-projection's bias
        torch.testing.assert_close(out.output[1, 2], mha.out_proj.bias)
        if need:
            assert (out.weights[1, :, 2] == 0).all()


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3), t=st.integers(1, 6), s=st.integers(1, 6), h=st.sampled_from([1, 2, 4]),
    causal=st.booleans(), cross=st.booleans(), seed=st.integers(0, 2**16),
)
def test_property_shapes_finite_and_paths_agree(b, t, s, h, causal, cross, seed):
    g = torch.Generator().manual_seed(seed)
    e = 4 * h
    mha = MultiHeadAttention(e, h).eval()
    x = torch.randn(b, t, e, generator=g) * 5
    key = torch.randn(b, s, e, generator=g) * 5 if cross else None
    s_eff = s if cross else t
    mask = torch.rand(b, 1, t, s_eff, generator=g) > 0.5
    with torch.no_grad():
        fast = mha(x, key, mask=mask, causal=causal).output
        slow = mha(x, key, mask=mask, causal=causal, need_weights=True)
    assert fast.shape == (b, t, e) and slow.weights.shape == (b, h, t, s_eff)
    assert torch.isfinite(fast).all() and torch.isfinite(slow.weights).all()
    torch.testing.assert_close(fast, slow.output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: MultiHeadAttention(10, 3), r"embed_dim \(10\).*num_heads \(3\)"),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 3, 6)), r"query must be \[B, T, 8\]"),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), torch.randn(2, 4, 5)), r"key must be"),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), torch.randn(3, 4, 8)), r"key must be"),
        (lambda: MultiHeadAttention(8, 2, vdim=5)(torch.randn(2, 3, 8), torch.randn(2, 4, 8),
                                                  torch.randn(2, 4, 8)), r"value must be"),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), mask=torch.ones(2, 1, 3, 3)), "boolean"),
        (lambda: MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), mask=torch.ones(2, 3, dtype=torch.bool)),
         r"\(2, 3\) does not broadcast"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("b, t", [(1, 5), (4, 40)])  # below and above the stacked-projection threshold
def test_both_projection_routes_match_torch(b, t):
    from attnkit.attention.fast import STACK_MIN_TOKENS as _STACK_MIN_TOKENS

    assert (b * t >= _STACK_MIN_TOKENS) == (t == 40)
    mha = MultiHeadAttention(32, 4).eval()
    ref = _reference(mha)
    x = torch.randn(b, t, 32)
    with torch.no_grad():
        expected = ref(x, x, x, need_weights=False)[0]
        torch.testing.assert_close(mha(x).output, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mha(x, need_weights=True).output, expected, atol=1e-5, rtol=1e-5)
    # the stacked route trains the separate projections: gradients reach q_proj, k_proj and v_proj
    mha(x).output.sum().backward()
    for proj in (mha.q_proj, mha.k_proj, mha.v_proj):
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("s", [5, 40])  # below and above the stacked-projection threshold (b = 4)
def test_cross_attention_stacked_keys_values_match_torch(s):
    mha = MultiHeadAttention(32, 4).eval()
    ref = _reference(mha)
    x, memory = torch.randn(4, 6, 32), torch.randn(4, s, 32)
    keep = _lengths_mask([s, 3, s - 1, 1], s)
    with torch.no_grad():
        expected = ref(x, memory, memory, key_padding_mask=~keep, need_weights=False)[0]
        torch.testing.assert_close(mha(x, memory, memory, mask=padding_mask(keep)).output, expected,
                                   atol=1e-5, rtol=1e-5)
    # the stacked route trains the separate projections: gradients reach k_proj and v_proj
    mha(x, memory, mask=padding_mask(keep)).output.sum().backward()
    for proj in (mha.q_proj, mha.k_proj, mha.v_proj):
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("index", [[1, 0, 2, 3], [0, 1, 1, 3], [3, 3, 0, 1], [0, 1, 2, 3], [2, 0], [1, 1, 0, 0, 3, 2]])
def test_cache_reorder_equals_index_select_of_the_written_positions(index):
    # swaps (a row read and overwritten in one call), duplicates, identity, shrinking, growing
    cache = KVCache(max_len=6)
    k, v = torch.randn(4, 2, 3, 5), torch.randn(4, 2, 3, 5)
    cache.append(k, v)
    idx = torch.tensor(index)
    cache.reorder(idx)
    got_k, got_v = cache.view()
    torch.testing.assert_close(got_k, k.index_select(0, idx), rtol=0, atol=0)
    torch.testing.assert_close(got_v, v.index_select(0, idx), rtol=0, atol=0)
    new = torch.randn(len(index), 2, 1, 5)
    all_k, _ = cache.append(new, new)  # writing goes on after the reorder
    torch.testing.assert_close(all_k, torch.cat([k.index_select(0, idx), new], 2), rtol=0, atol=0)


def test_one_query_step_matches_torch_and_zeroes_a_fully_masked_row():
    """A single query (a decoding step) takes the small-product path: same result as
    nn.MultiheadAttention over padded keys, and 0 attention for a row with no allowed key."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    ref = _reference(mha)
    q, mem = torch.randn(3, 1, 16), torch.randn(3, 6, 16)
    keep = _lengths_mask([6, 2, 4], 6)
    got = mha(q, mem, mask=padding_mask(keep)).output
    expected, _ = ref(q, mem, mem, key_padding_mask=~keep)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    keep[1] = False
    out = mha(q, mem, mask=padding_mask(keep)).output
    torch.testing.assert_close(out[1, 0], mha.out_proj.bias)
    assert torch.isfinite(out).all()


def test_inference_reuses_stacked_weights_and_follows_optimizer_steps() -> None:
    """Without autograd inside a frozen-weights block, the stacked q/k/v weights are cached; an optimizer
    step must invalidate them."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4)
    x, mem = torch.randn(2, 40, 16), torch.randn(2, 40, 16)  # 80 tokens: the stacked path
    opt = torch.optim.SGD(mha.parameters(), lr=0.5)
    with frozen_weights():
        for _ in range(2):
            with torch.no_grad():
                cached_self, cached_cross = mha(x).output, mha(x, mem).output
            assert mha._stacked.cached("qkv_w") is not None and mha._stacked.cached("kv_w") is not None
            fresh_self, fresh_cross = mha(x).output, mha(x, mem).output  # autograd on: stacked in the graph
            torch.testing.assert_close(cached_self, fresh_self.detach(), rtol=0, atol=0)
            torch.testing.assert_close(cached_cross, fresh_cross.detach(), rtol=0, atol=0)
            (fresh_self.sum() + fresh_cross.sum()).backward()
            opt.step()
            opt.zero_grad()
            assert mha._stacked.cached("qkv_w") is None  # the step dropped the copies
