import math

import pytest
import torch

from attnkit.attention import AdditiveScore, BilinearScore, DotScore, ScaledDotScore


def _inputs(b=3, m=4, n=5, dq=6, dk=6):
    return torch.randn(b, m, dq, dtype=torch.float64), torch.randn(b, n, dk, dtype=torch.float64)


def _loop(fn, q, k):
    """For-loop oracle: scores[b, i, j] = fn(k[b, j], q[b, i])."""
    out = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=torch.float64)
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            for j in range(k.shape[1]):
                out[b, i, j] = fn(k[b, j], q[b, i])
    return out


def test_dot_score_matches_formula():
    q, k = _inputs()
    torch.testing.assert_close(DotScore()(q, k), _loop(lambda x, y: x @ y, q, k))


def test_scaled_dot_score_matches_formula():
    q, k = _inputs(dq=7, dk=7)
    torch.testing.assert_close(ScaledDotScore()(q, k), _loop(lambda x, y: x @ y / math.sqrt(7), q, k))


def test_additive_score_matches_formula():
    q, k = _inputs(dq=3, dk=5)
    s = AdditiveScore(3, 5, 8).double()
    W, U, v = s.W.weight, s.U.weight, s.v.weight[0]
    expected = _loop(lambda x, y: v @ torch.tanh(W @ x + U @ y), q, k)
    torch.testing.assert_close(s(q, k), expected)


def test_bilinear_score_matches_formula_and_identity_is_dot():
    q, k = _inputs(dq=3, dk=5)
    s = BilinearScore(3, 5).double()
    torch.testing.assert_close(s(q, k), _loop(lambda x, y: x @ s.W @ y, q, k))
    q, k = _inputs(dq=4, dk=4)
    ident = BilinearScore(4, 4).double()
    with torch.no_grad():
        ident.W.copy_(torch.eye(4))
    torch.testing.assert_close(ident(q, k), DotScore()(q, k))


@pytest.mark.parametrize(
    "score, q_shape, k_shape, match",
    [
        (DotScore(), (2, 3, 4), (2, 5, 6), "widths to match"),
        (ScaledDotScore(), (2, 3, 4), (3, 5, 4), "batch"),
        (AdditiveScore(4, 6, 8), (2, 3, 5), (2, 5, 6), r"query_dim=4"),
        (BilinearScore(4, 6), (2, 3, 4), (2, 5, 5), r"key_dim=6"),
        (DotScore(), (3, 4), (2, 5, 4), r"\[B, M, Dq\]"),
    ],
)
def test_scores_reject_bad_shapes(score, q_shape, k_shape, match):
    with pytest.raises(ValueError, match=match):
        score(torch.randn(*q_shape), torch.randn(*k_shape))
