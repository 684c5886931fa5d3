import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.attention import (
    AdditiveScore,
    BilinearScore,
    DotScore,
    HardAttention,
    ScaledDotScore,
    SoftAttention,
    reinforce_loss,
)
from attnkit.attention.masks import masked_softmax


def test_soft_weights_sum_to_one_on_allowed_and_zero_on_masked():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 6, 4), torch.randn(2, 6, 5)
    mask = torch.rand(2, 3, 6) > 0.4
    mask[..., 0] = True
    out, w = SoftAttention(ScaledDotScore())(q, k, v, mask)
    assert out.shape == (2, 3, 5) and w.shape == (2, 3, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    assert (w[~mask] == 0).all()
    torch.testing.assert_close(out, w @ v)


def test_plain_mode_equals_key_value_mode_with_values_equal_keys():
    att = SoftAttention(AdditiveScore(4, 4, 8))
    q, k = torch.randn(2, 3, 4), torch.randn(2, 6, 4)
    a, wa = att(q, k)
    b, wb = att(q, k, k.clone())
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(wa, wb)


def test_fully_masked_query_gets_zero_output_and_weights():
    q, k = torch.randn(1, 2, 4), torch.randn(1, 3, 4)
    mask = torch.tensor([[[True, False, True], [False, False, False]]])
    out, w = SoftAttention(DotScore())(q, k, mask=mask)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert (out[0, 1] == 0).all() and (w[0, 1] == 0).all()
    hard = HardAttention(DotScore())(q, k, mask=mask)
    assert (hard.output[0, 1] == 0).all() and hard.log_prob[0, 1] == 0


def test_soft_mask_errors_name_the_problem():
    att = SoftAttention(DotScore())
    q, k = torch.randn(2, 3, 4), torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match="boolean"):
        att(q, k, mask=torch.ones(2, 3, 6))
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        att(q, k, mask=torch.ones(2, 3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="values"):
        att(q, k, torch.randn(2, 5, 4))


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3), m=st.integers(1, 5), n=st.integers(1, 7), d=st.integers(1, 6),
    score=st.sampled_from(["dot", "scaled", "additive", "bilinear"]), seed=st.integers(0, 2**16),
)
def test_soft_and_hard_attention_properties(b, m, n, d, score, seed):
    g = torch.Generator().manual_seed(seed)
    scorer = {"dot": DotScore(), "scaled": ScaledDotScore(), "additive": AdditiveScore(d, d, 3),
              "bilinear": BilinearScore(d, d)}[score]
    q, k = torch.randn(b, m, d, generator=g) * 10, torch.randn(b, n, d, generator=g) * 10
    mask = torch.rand(b, m, n, generator=g) > 0.5
    out, w = SoftAttention(scorer)(q, k, mask=mask)
    assert out.shape == (b, m, d) and w.shape == (b, m, n)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    sums = w.sum(-1)
    any_allowed = mask.any(-1)
    torch.testing.assert_close(sums[any_allowed], torch.ones_like(sums[any_allowed]))
    assert (sums[~any_allowed] == 0).all()
    for mode in ("argmax", "sample"):
        h = HardAttention(scorer, mode)(q, k, mask=mask, generator=g)
        assert h.weights.shape == (b, m, n) and h.log_prob.shape == (b, m)
        assert torch.isfinite(h.log_prob).all()
        # the choice is one allowed key (one-hot), or nothing when no key is allowed
        assert (h.weights.sum(-1) == any_allowed.float()).all()
        assert (h.weights[~mask] == 0).all()


def test_hard_argmax_picks_the_soft_mode_and_sample_follows_the_distribution():
    scorer = ScaledDotScore()
    q, k = torch.randn(4, 3, 8), torch.randn(4, 9, 8)
    soft_w = SoftAttention(scorer)(q, k).weights
    h = HardAttention(scorer, "argmax")(q, k)
    assert (h.index == soft_w.argmax(-1)).all()
    torch.testing.assert_close(h.log_prob, soft_w.max(-1).values.log())
    q1, k1 = torch.randn(1, 1, 2), torch.randn(1, 4, 2)
    p = SoftAttention(DotScore())(q1, k1).weights[0, 0]
    att = HardAttention(DotScore(), "sample")
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[att(q1, k1, generator=g).index[0, 0]] += 1
    assert (counts / 4000 - p).abs().max() < 0.03


def test_reinforce_loss_gradient_is_policy_gradient():
    logits = torch.randn(5, requires_grad=True)
    log_p = torch.log_softmax(logits, -1)
    idx = torch.tensor([1, 3])
    reward, baseline = torch.tensor([2.0, -1.0]), 0.5
    loss = reinforce_loss(log_p[idx], reward, baseline)
    (g,) = torch.autograd.grad(loss, logits)
    expected = torch.zeros(5)
    for i, r in zip(idx.tolist(), reward.tolist(), strict=True):
        onehot = torch.nn.functional.one_hot(torch.tensor(i), 5).float()
        expected -= (r - baseline) * (onehot - log_p.detach().exp()) / 2
    torch.testing.assert_close(g, expected)


def test_hard_attention_learns_argmax_position_with_reinforce():
    """A scorer trained only through REINFORCE learns to point at the position of the largest value."""
    torch.manual_seed(0)
    n = 8
    scorer = BilinearScore(4, 4)
    key_net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    query = torch.nn.Parameter(torch.randn(1, 1, 4))
    att = HardAttention(scorer, "sample")
    params = [*scorer.parameters(), *key_net.parameters(), query]
    opt = torch.optim.Adam(params, lr=0.03)
    baseline = 0.0
    for _ in range(300):
        x = torch.rand(64, n, 1)
        h = att(query.expand(64, 1, 4), key_net(x), x)
        reward = (h.index[:, 0] == x[..., 0].argmax(-1)).float()
        loss = reinforce_loss(h.log_prob[:, 0], reward, baseline)
        baseline = 0.9 * baseline + 0.1 * reward.mean().item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.rand(1000, n, 1)
    greedy = HardAttention(scorer, "argmax")(query.expand(1000, 1, 4), key_net(x), x)
    acc = (greedy.index[:, 0] == x[..., 0].argmax(-1)).float().mean().item()
    assert acc >= 0.95, acc


def test_masked_softmax_without_mask_is_softmax():
    s = torch.randn(3, 4)
    torch.testing.assert_close(masked_softmax(s, None), torch.softmax(s, -1))
    with pytest.raises(ValueError):
        HardAttention(DotScore(), mode="greedy")
