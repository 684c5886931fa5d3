"""Rotary position embeddings against for-loop oracles in float64: the rotation of each pair in both
layouts, the frequency schedules (theta, linear and Llama-3 scaling, the latter as Meta's reference code
writes it), the relative-position property, and keys rotated once at their absolute position before they
enter the KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.attention import KVCache, MultiHeadAttention, RopeScaling, RotaryEmbedding
from attnkit.attention.rope import rope_frequencies


def rotate_loop(x: torch.Tensor, positions: list[int], theta: float, interleaved: bool,
                freqs: list[float] | None = None) -> torch.Tensor:
    """x [T, Dh] rotated pair by pair in float64, as the papers write it."""
    t, d = x.shape
    out = torch.empty(t, d, dtype=torch.float64)
    freqs = freqs or [theta ** (-2 * i / d) for i in range(d // 2)]
    for row, pos in enumerate(positions):
        for i in range(d // 2):
            a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)
            angle = pos * freqs[i]
            xa, xb = float(x[row, a]), float(x[row, b])
            out[row, a] = xa * math.cos(angle) - xb * math.sin(angle)
            out[row, b] = xa * math.sin(angle) + xb * math.cos(angle)
    return out


def llama3_loop(freqs: list[float], factor: float, low: float, high: float, old_len: int) -> list[float]:
    """Meta's ``apply_scaling`` (llama-models, Llama 3.1), one frequency at a time."""
    low_wavelen, high_wavelen = old_len / low, old_len / high
    new = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            new.append(freq)
        elif wavelen > low_wavelen:
            new.append(freq / factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            new.append((1 - smooth) * freq / factor + smooth * freq)
    return new


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_rotation_equals_pairwise_loop(interleaved: bool, theta: float) -> None:
    rope = RotaryEmbedding(8, theta=theta, interleaved=interleaved).double()
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5], [7, 8, 9, 30, 31, 100]])
    got = rope(x, positions)
    for b in range(2):
        for h in range(3):
            expected = rotate_loop(x[b, h], positions[b].tolist(), theta, interleaved)
            torch.testing.assert_close(got[b, h], expected, atol=1e-5, rtol=0)  # inv_freq is float32-rounded


def test_interleaved_is_rotate_half_with_dimensions_permuted() -> None:
    d = 10
    perm = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # GPT-J pair i = dims (2i, 2i+1)
    x = torch.randn(1, 2, 5, d)
    pos = torch.arange(5) * 3
    half = RotaryEmbedding(d)(x[..., perm], pos)
    inter = RotaryEmbedding(d, interleaved=True)(x, pos)
    torch.testing.assert_close(inter[..., perm], half, atol=1e-6, rtol=0)


@pytest.mark.parametrize("interleaved", [False, True])
def test_scores_depend_only_on_the_relative_position(interleaved: bool) -> None:
    rope = RotaryEmbedding(16, interleaved=interleaved).double()
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        return float((rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum())

    for shift in (1, 17, 250):
        assert score(5 + shift, 2 + shift) == pytest.approx(score(5, 2), abs=1e-9)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
    assert score(0, 0) == pytest.approx(float((q * k).sum()), abs=1e-12)  # position 0: no rotation


def test_llama3_and_linear_scaling_equal_the_reference_loops() -> None:
    d, theta = 64, 500000.0
    base = [theta ** (-2 * i / d) for i in range(d // 2)]
    scaling = RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_len=8192)
    expected = torch.tensor(llama3_loop(base, 8.0, 1.0, 4.0, 8192), dtype=torch.float64)
    got = rope_frequencies(d, theta, scaling).double()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    # the three regimes are all present at this size: kept, divided, blended
    ratio = (torch.tensor(base, dtype=torch.float64) / expected).tolist()
    assert min(ratio) == pytest.approx(1.0) and max(ratio) == pytest.approx(8.0)
    assert any(1.01 < r < 7.99 for r in ratio)
    linear = rope_frequencies(d, theta, RopeScaling("linear", factor=4.0)).double()
    torch.testing.assert_close(linear, torch.tensor(base, dtype=torch.float64) / 4, rtol=1e-6, atol=0)
    # the module rotates by its frequencies, as the loop does (far positions: its float32-rounded ones)
    x = torch.randn(3, d, dtype=torch.float64)
    rope = RotaryEmbedding(d, theta, scaling).double()
    torch.testing.assert_close(rope(x[None, None], torch.tensor([0, 900, 20000]))[0, 0],
                               rotate_loop(x, [0, 900, 20000], theta, False, got.tolist()), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="scaling must be one of"):
        RopeScaling("yarn", 2.0)


def test_keys_enter_the_cache_rotated_once_at_their_absolute_position() -> None:
    torch.manual_seed(0)
    e, h = 16, 2
    rope = RotaryEmbedding(e // h)
    mha = MultiHeadAttention(e, h, rope=rope).eval()
    x = torch.randn(2, 9, e)
    cache = KVCache(12)
    with torch.no_grad():
        steps = [mha(x[:, :5], causal=True, cache=cache).output]
        steps += [mha(x[:, i : i + 1], causal=True, cache=cache).output for i in range(5, 9)]
        full = mha(x, causal=True).output
        keys = mha.k_proj(x).unflatten(-1, (h, e // h)).transpose(1, 2)  # (B, H, T, Dh) unrotated
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cache.view()[0], rope(keys, torch.arange(9)), atol=1e-6, rtol=0)
    # left-padded rows pass their own positions: row 1 shifted by 3 gives row 1's unshifted result
    pos = torch.arange(9).expand(2, 9) - torch.tensor([[0], [3]])
    with torch.no_grad():
        shifted = mha(x, causal=True, positions=pos.clamp(min=0)).output
        alone = mha(x[1:, 3:], causal=True).output
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., :3] = False
    with torch.no_grad():
        shifted = mha(x, causal=True, positions=pos.clamp(min=0), mask=mask).output
    torch.testing.assert_close(shifted[1, 3:], alone[0], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="self-attention only"):
        mha(x, x)
