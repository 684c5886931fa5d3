"""Long-range study classifiers: shapes, matched budgets, the CNN's receptive field, and the study's
claim at small scale: self-attention solves a distance that a CNN with a smaller receptive field cannot."""

from __future__ import annotations

import pytest
import torch

from attnkit.data.synthetic import TaskSpec, generate
from attnkit.models import num_parameters
from attnkit.models.baselines import BASELINES, CNNClassifier, MLPClassifier, build_baseline


@pytest.mark.parametrize("name", BASELINES)
def test_shapes_and_matched_budget(name: str) -> None:
    model = build_baseline(name, vocab=21, classes=8, max_len=30, budget=20_000)
    assert abs(num_parameters(model) - 20_000) < 0.1 * 20_000
    assert model(torch.randint(1, 21, (3, 30))).shape == (3, 8)


def test_cnn_sees_only_its_receptive_field() -> None:
    """Before pooling, the feature at position i depends only on tokens within (rf - 1) / 2 of it."""
    cnn = CNNClassifier(vocab=10, classes=3, width=8, depth=2, kernel=3)
    assert cnn.receptive_field == 5
    x = torch.randint(0, 10, (1, 20))

    def features(tokens: torch.Tensor) -> torch.Tensor:
        h = cnn.embed(tokens).transpose(1, 2)
        for conv in cnn.convs:
            h = torch.relu(conv(h))
        return h[0, :, 10]

    y = x.clone()
    y[0, 13:] = (y[0, 13:] + 1) % 10  # beyond 2 positions from 10: no change
    y[0, :8] = (y[0, :8] + 1) % 10
    torch.testing.assert_close(features(x), features(y))
    y[0, 12] = (y[0, 12] + 1) % 10  # within reach: changes
    assert not torch.allclose(features(x), features(y))


def test_mlp_rejects_longer_inputs() -> None:
    mlp = MLPClassifier(vocab=5, classes=2, width=4, max_len=6)
    assert mlp(torch.ones(2, 4, dtype=torch.long)).shape == (2, 2)  # shorter: left-padded
    with pytest.raises(ValueError, match="at most 6"):
        mlp(torch.ones(2, 7, dtype=torch.long))


def _train_acc(name: str, spec: TaskSpec, steps: int) -> float:
    torch.manual_seed(0)
    model = build_baseline(name, spec.vocab_size, spec.n_classes, spec.length, budget=20_000)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(steps):
        b = generate(spec, 64, seed=i)
        loss = torch.nn.functional.cross_entropy(model(b.tokens), b.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = generate(spec, 500, seed=10**6)
    with torch.no_grad():
        return (model.eval()(test.tokens).argmax(-1) == test.labels).float().mean().item()


def test_self_attention_solves_a_distance_a_small_cnn_cannot() -> None:
    """Recall at d = 12: the query and its key are 13 apart, beyond the CNN's receptive field of 5, so
    the CNN can at best guess among the values it sees (about 1/3); self-attention connects them."""
    spec = TaskSpec(distance=12)
    attention = _train_acc("attention", spec, 250)
    cnn = _train_acc("cnn", spec, 250)
    assert attention > 0.9, attention
    assert cnn < 0.6, cnn
