"""The attention arguments of the Llama lineage (grouped-query heads, RoPE, sliding window, q/k norms,
q/k/v biases) against a for-loop float64 oracle and against the equivalent full-head attention, on the
fast (SDPA) and explicit (weights) paths, with padding, causal and window masks, and through cached
decoding (the window cache included, past W, with left padding and beam reordering)."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.attention import KVCache, MultiHeadAttention, RotaryEmbedding, causal_mask, padding_mask


def attention_loop(mha: MultiHeadAttention, x: torch.Tensor, keep: torch.Tensor | None, causal: bool,
                   positions: torch.Tensor | None = None) -> torch.Tensor:
    """One self-attention call, query by query and head by head in float64: x [B, T, E] -> [B, T, E]."""
    b, t, e = x.shape
    h, hkv, dh = mha.num_heads, mha.num_kv_heads, mha.head_dim
    x = x.double()

    def proj(lin: torch.nn.Linear, row: torch.Tensor) -> torch.Tensor:
        return row @ lin.weight.double().T + (0 if lin.bias is None else lin.bias.double())

    def rms(v: torch.Tensor, norm: torch.nn.RMSNorm | None) -> torch.Tensor:
        if norm is None:
            return v
        return v / torch.sqrt((v * v).mean() + norm.eps) * norm.weight.double()

    def rotate(v: torch.Tensor, pos: int) -> torch.Tensor:
        if mha.rope is None:
            return v
        out = v.clone()
        for i in range(dh // 2):
            a, c = (2 * i, 2 * i + 1) if mha.rope.interleaved else (i, i + dh // 2)
            ang = pos * float(mha.rope.inv_freq[i])
            out[a] = v[a] * math.cos(ang) - v[c] * math.sin(ang)
            out[c] = v[a] * math.sin(ang) + v[c] * math.cos(ang)
        return out

    heads = torch.zeros(b, t, h * dh, dtype=torch.float64)
    for bi in range(b):
        pos = list(range(t)) if positions is None else positions[bi].tolist()
        q = [proj(mha.q_proj, x[bi, i]) for i in range(t)]
        k = [proj(mha.k_proj, x[bi, j]) for j in range(t)]
        v = [proj(mha.v_proj, x[bi, j]) for j in range(t)]
        for hi in range(h):
            g = hi // (h // hkv)  # the key/value head of this query head's group
            qs = [rotate(rms(q[i][hi * dh : (hi + 1) * dh], mha.q_norm), pos[i]) for i in range(t)]
            ks = [rotate(rms(k[j][g * dh : (g + 1) * dh], mha.k_norm), pos[j]) for j in range(t)]
            vs = [v[j][g * dh : (g + 1) * dh] for j in range(t)]
            for i in range(t):
                allowed = [j for j in range(t) if (keep is None or keep[bi, j])
                           and (not causal or (j <= i and (mha.window is None or j > i - mha.window)))]
                if not allowed:
                    continue
                scores = torch.stack([qs[i] @ ks[j] / math.sqrt(dh) for j in allowed])
                w = torch.softmax(scores, 0)
                heads[bi, i, hi * dh : (hi + 1) * dh] = sum(wj * vs[j] for wj, j in zip(w, allowed, strict=True))
    return proj(mha.out_proj, heads)


def make(e: int = 16, h: int = 4, hkv: int = 2, *, rope: bool = True, window: int | None = None,
         qk_norm: bool = False, bias: bool = True, qkv_bias: bool | None = None,
         interleaved: bool = False) -> MultiHeadAttention:
    mha = MultiHeadAttention(e, h, bias=bias, num_kv_heads=hkv, qkv_bias=qkv_bias, window=window, qk_norm=qk_norm,
                             rope=RotaryEmbedding(e // h, interleaved=interleaved) if rope else None).eval()
    if qk_norm:  # non-trivial norm weights
        with torch.no_grad():
            mha.q_norm.weight.uniform_(0.5, 1.5)
            mha.k_norm.weight.uniform_(0.5, 1.5)
    return mha


CASES = {
    "gqa": dict(hkv=2),
    "mqa": dict(hkv=1),
    "gqa-window": dict(hkv=2, window=3),
    "mha-window-norescale": dict(hkv=4, window=2, rope=False),
    "qk-norm-interleaved": dict(hkv=2, qk_norm=True, interleaved=True),
    "qkv-bias-only": dict(hkv=2, bias=False, qkv_bias=True),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("padded", [False, True])
def test_equals_the_for_loop_oracle_on_both_paths(case: str, padded: bool) -> None:
    torch.manual_seed(0)
    mha = make(**CASES[case])
    x = torch.randn(2, 7, 16)
    keep = torch.ones(2, 7, dtype=torch.bool)
    if padded:
        keep[1, :2] = False  # left padding: row 1's tokens at positions 0..4
    positions = (keep.long().cumsum(1) - 1).clamp(min=0)
    mask = padding_mask(keep) if padded else None
    expected = attention_loop(mha, x, keep if padded else None, True, positions)
    with torch.no_grad():
        fast = mha(x, mask=mask, causal=True, positions=positions).output
        slow = mha(x, mask=mask, causal=True, positions=positions, need_weights=True)
    rows = keep if padded else torch.ones_like(keep)
    torch.testing.assert_close(fast[rows].double(), expected[rows], atol=2e-5, rtol=0)
    torch.testing.assert_close(slow.output[rows].double(), expected[rows], atol=2e-5, rtol=0)
    assert slow.weights.shape == (2, 4, 7, 7)
    if mha.window is not None:  # keys W or more behind a query get no weight
        behind = ~causal_mask(7, window=mha.window) & causal_mask(7)
        assert (slow.weights[:, :, behind] == 0).all()
    if CASES[case].get("qkv_bias"):
        assert mha.out_proj.bias is None and mha.q_proj.bias is not None and mha.v_proj.bias is not None


def full_head_copy(mha: MultiHeadAttention) -> MultiHeadAttention:
    """The same attention with H key/value heads: each K/V head's weights repeated for its group."""
    h, hkv, dh = mha.num_heads, mha.num_kv_heads, mha.head_dim
    full = MultiHeadAttention(mha.embed_dim, h, rope=mha.rope, window=mha.window).eval()
    index = (torch.arange(h)[:, None] // (h // hkv) * dh + torch.arange(dh)).flatten()  # rows of head h's group
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(full, name).load_state_dict(getattr(mha, name).state_dict())
        for name in ("k_proj", "v_proj"):
            getattr(full, name).weight.copy_(getattr(mha, name).weight[index])
            getattr(full, name).bias.copy_(getattr(mha, name).bias[index])
    return full


@pytest.mark.parametrize("hkv", [1, 2])
def test_grouped_heads_equal_repeating_k_and_v_per_group_and_cache_only_kv_heads(hkv: int) -> None:
    torch.manual_seed(1)
    mha = make(16, 4, hkv, window=None)
    full = full_head_copy(mha)
    x = torch.randn(3, 10, 16)
    keep = torch.ones(3, 10, dtype=torch.bool)
    keep[0, :4] = False
    mask = padding_mask(keep)
    with torch.no_grad():
        for need in (False, True):
            ours = mha(x, mask=mask, causal=True, need_weights=need)
            ref = full(x, mask=mask, causal=True, need_weights=need)
            torch.testing.assert_close(ours.output, ref.output, atol=1e-6, rtol=1e-5)
            if need:
                torch.testing.assert_close(ours.weights, ref.weights, atol=1e-6, rtol=1e-5)
        grouped, whole = KVCache(12), KVCache(12)
        out_g = [mha(x[:, :6], mask=mask[..., :6], causal=True, cache=grouped).output]
        out_f = [full(x[:, :6], mask=mask[..., :6], causal=True, cache=whole).output]
        for i in range(6, 10):  # one query per step: the grouped one-query path
            out_g.append(mha(x[:, i : i + 1], mask=mask[..., : i + 1], causal=True, cache=grouped).output)
            out_f.append(full(x[:, i : i + 1], mask=mask[..., : i + 1], causal=True, cache=whole).output)
    torch.testing.assert_close(torch.cat(out_g, 1), torch.cat(out_f, 1), atol=1e-6, rtol=1e-5)
    assert grouped.k.shape == (3, hkv, 12, 4) and whole.k.shape == (3, 4, 12, 4)
    assert grouped.k.numel() * 4 == whole.k.numel() * hkv  # the cache is n_kv_heads / n_heads of a full one
    assert grouped.v.numel() * 4 == whole.v.numel() * hkv


def test_grouped_attention_gradients_float64() -> None:
    mha = make(8, 4, 2, qk_norm=True, window=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(torch.tensor([[True] * 5, [False, True, True, True, True]]))
    for need in (False, True):
        assert torch.autograd.gradcheck(lambda a, need=need: mha(a, mask=mask, causal=True,
                                                                 need_weights=need).output, (x,))


def test_window_mask_rule_is_the_causal_mask_with_the_window_applied() -> None:
    for t, s, w in ((6, 6, 1), (6, 6, 3), (2, 9, 4), (5, 5, 10)):
        got = causal_mask(t, s, window=w)
        for i in range(t):
            q = s - t + i
            assert got[i].tolist() == [q - w < j <= q for j in range(s)]
    with pytest.raises(ValueError, match=">= 1"):
        causal_mask(3, window=0)


@pytest.mark.parametrize("prompt", [2, 5, 13])
@pytest.mark.parametrize("padded", [False, True])
def test_window_cache_keeps_the_last_positions_and_equals_full_recompute_past_w(prompt: int, padded: bool) -> None:
    torch.manual_seed(2)
    w, total = 4, 30
    mha = make(16, 4, 2, window=w)
    x = torch.randn(2, total, 16)
    keep = torch.ones(2, total, dtype=torch.bool)
    if padded:
        keep[1, :2] = False  # row 1 left-padded in its prompt
    positions = (keep.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        full = mha(x, mask=padding_mask(keep), causal=True, positions=positions).output
        cache = KVCache(total, window=w)
        outs, sizes = [], []
        for lo, hi in [(0, prompt)] + [(i, i + 1) for i in range(prompt, total)]:
            start = cache.next_start(hi - lo)
            out = mha(x[:, lo:hi], mask=padding_mask(keep[:, start:hi]), causal=True, cache=cache,
                      positions=positions[:, lo:hi]).output
            assert cache.start == start and cache.length == hi
            outs.append(out)
            sizes.append(cache.k.shape[2])
    rows = keep
    torch.testing.assert_close(torch.cat(outs, 1)[rows], full[rows], atol=1e-6, rtol=1e-5)
    # memory bounded by the window: a prompt longer than 2W is held once, then 2W positions at most
    assert sizes[0] == max(prompt, 2 * w) and max(sizes[1:]) == 2 * w and cache.held <= 2 * w
    assert cache.start > 0  # old keys were dropped


def test_window_cache_reorder_and_long_multi_token_steps() -> None:
    torch.manual_seed(3)
    w = 3
    mha = make(16, 4, 2, window=w)
    x = torch.randn(3, 20, 16)
    with torch.no_grad():
        cache = KVCache(20, window=w)
        mha(x[:, :4], causal=True, cache=cache)
        for i in range(4, 11):
            mha(x[:, i : i + 1], causal=True, cache=cache)
        index = torch.tensor([2, 0, 0])
        cache.reorder(index)
        got = mha(x[index, 11:18], causal=True, cache=cache).output  # a 7-token step: wider than the buffer
        expected = mha(x[index, :18], causal=True).output[:, 11:]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert cache.length == 18 and cache.start == 11 - (w - 1)
