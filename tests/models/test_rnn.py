"""RNN encoder-decoder with attention: every scoring function trains, hard attention learns through
REINFORCE, step decoding equals the full forward, and the model drives the shared generate()."""

from __future__ import annotations

import pytest
import torch

from attnkit.decoding import GenerationConfig, generate
from attnkit.models.rnn import SCORES, RNNSeq2Seq, RNNSeq2SeqConfig

V, L, BOS = 12, 7, 1


def reverse_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reverse task: src [n, L] of tokens 3..V-1; tgt_in = BOS + reversed[:-1]; tgt_out = reversed."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (n, L), generator=g)
    tgt = src.flip(1)
    return src, torch.cat([torch.full((n, 1), BOS), tgt[:, :-1]], 1), tgt


def train(model: RNNSeq2Seq, steps: int, lr: float = 1e-2) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for i in range(steps):
        src, tin, tout = reverse_batch(32, 100 + i)
        loss = model.loss(src, tin, tout)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize(
    ("cell", "score"), [("gru", s) for s in SCORES[:-1]] + [("lstm", "additive"), ("lstm", "dot")]
)
def test_overfits_one_batch(cell: str, score: str) -> None:
    torch.manual_seed(0)
    model = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, cell=cell, score=score))
    src, tin, tout = reverse_batch(8, 0)
    opt = torch.optim.Adam(model.parameters(), 2e-2)
    first = None
    for _ in range(100):
        loss = model.loss(src, tin, tout)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert model.loss(src, tin, tout).item() < 0.05 * first
    assert torch.equal(model(src, tin).argmax(-1), tout)


def _alignment(model: RNNSeq2Seq) -> tuple[float, float]:
    src, tin, tout = reverse_batch(256, 999)
    out = model.run(src, tin, need_weights=True)
    acc = (out.logits.argmax(-1) == tout).float().mean().item()
    align = (out.weights.argmax(-1) == torch.arange(L - 1, -1, -1)).float().mean().item()
    return acc, align


def test_hard_attention_learns_alignment_by_reinforce() -> None:
    """On reversal, output t must read source L-1-t. With REINFORCE the hard choices find it; with the
    REINFORCE term switched off the scorer gets no gradient at all (the choice is not differentiable),
    so its choices stay near chance (1/L)."""
    torch.manual_seed(0)
    trained = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, score="hard"))
    train(trained, 250)
    torch.manual_seed(0)
    frozen = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, score="hard", reinforce_weight=0.0))
    before = {k: v.clone() for k, v in frozen.attention.score.state_dict().items()}
    train(frozen, 250)
    for k, v in frozen.attention.score.state_dict().items():
        assert torch.equal(v, before[k]), "no gradient reaches a hard scorer without REINFORCE"
    acc, align = _alignment(trained)
    acc0, align0 = _alignment(frozen)
    assert align > 0.6 and align > align0 + 0.3, (align, align0)
    assert acc > acc0, (acc, acc0)


def test_hard_attention_is_one_hot() -> None:
    model = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, score="hard")).eval()
    src, tin, _ = reverse_batch(4, 1)
    w = model.run(src, tin).weights
    assert torch.equal(w.sum(-1), torch.ones(4, L))
    assert set(w.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("score", SCORES)
def test_step_decoding_equals_full_forward(cell: str, score: str) -> None:
    torch.manual_seed(0)
    cfg = RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, cell=cell, score=score, n_layers=2)
    model = RNNSeq2Seq(cfg).eval()
    src, tin, _ = reverse_batch(3, 2)
    src[0, 5:] = 0  # padding must be ignored both ways
    full = model.run(src, tin, need_weights=True)
    session = model.start_decoding(src)
    steps = [session.step_with_weights(tin[:, i : i + 1]) for i in range(tin.shape[1])]
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([s.weights for s in steps], 1), full.weights, atol=1e-5, rtol=1e-5)
    assert full.weights[0, :, 5:].abs().max().item() == 0.0


def test_padding_does_not_change_the_result() -> None:
    torch.manual_seed(0)
    model = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V)).eval()
    src, tin, _ = reverse_batch(1, 3)
    padded = torch.cat([src, torch.zeros(1, 4, dtype=torch.long)], 1)
    torch.testing.assert_close(model(padded, tin), model(src, tin), atol=1e-6, rtol=1e-6)


def test_generate_and_reorder() -> None:
    torch.manual_seed(0)
    model = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, score="dot"))
    train(model, 200)
    src, _, tout = reverse_batch(16, 5)
    out = generate(model.start_decoding(src), torch.full((16, 1), BOS), GenerationConfig(max_new_tokens=L))
    assert (out == tout).float().mean() > 0.9
    session = model.start_decoding(src)
    session.reorder(torch.tensor([3, 3, 0]))
    logits = session.step(torch.full((3, 1), BOS))
    ref = model.start_decoding(src[[3, 3, 0]]).step(torch.full((3, 1), BOS))
    torch.testing.assert_close(logits, ref)


def test_loss_sum_matches_cross_entropy_and_adds_reinforce() -> None:
    src, tin, tout = reverse_batch(4, 7)
    tout[0, 4:] = 0
    soft = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V))
    total, count = soft.loss_sum(src, tin, tout)
    ref = torch.nn.functional.cross_entropy(soft(src, tin).transpose(1, 2), tout, ignore_index=0)
    torch.testing.assert_close(total / count, ref)
    assert int(count) == 4 * L - 3
    hard = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, score="hard")).eval()
    hard_total, _ = hard.loss_sum(src, tin, tout)  # eval: argmax choices, same as run()
    ce = torch.nn.functional.cross_entropy(hard(src, tin).transpose(1, 2), tout, ignore_index=0)
    assert not torch.allclose(hard_total / count, ce)


def test_config_json_and_errors() -> None:
    cfg = RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, cell="lstm", score="bilinear")
    assert RNNSeq2SeqConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="cell"):
        RNNSeq2SeqConfig(5, 5, cell="rnn")
    with pytest.raises(ValueError, match="score"):
        RNNSeq2SeqConfig(5, 5, score="cosine")
    with pytest.raises(ValueError, match="src must be"):
        RNNSeq2Seq(cfg).encode(torch.zeros(3, dtype=torch.long))


def test_beam_search_drives_the_rnn_session() -> None:
    """Beam search (shared with the Transformer) runs on the RNN's session (reorder expands and selects
    beams) and finds the reversal the model learned."""
    from attnkit.decoding.beam import BeamConfig, beam_search

    torch.manual_seed(0)
    model = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, score="additive"))
    train(model, 200)
    src, _, tout = reverse_batch(8, 6)
    out = beam_search(model.start_decoding(src), torch.full((8, 1), BOS), BeamConfig(4, 0.0, L, eos_id=2))
    assert (out.tokens[:, :L] == tout).float().mean() > 0.9
