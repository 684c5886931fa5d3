"""The same code on a CUDA GPU gives what it gives on the CPU (outputs within float32 tolerance, identical
decoded tokens), and training on the GPU resumes exactly (CUDA random state restored).

CI has no GPU: there these tests are reported as skipped, never as passed. They are run on a lent GPU
machine (see docs/status.md for the last run and its result).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from attnkit.attention import MultiHeadAttention, causal_mask
from attnkit.decoding import GenerationConfig, generate
from attnkit.decoding.beam import BeamConfig, beam_search
from attnkit.models.bert import BERT, BERTConfig
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.rnn import SCORES, RNNSeq2Seq, RNNSeq2SeqConfig
from attnkit.models.transformer import Transformer, TransformerConfig

# ATTNKIT_TEST_DEVICE=cpu runs the same checks CPU against CPU (a dry run of the tests themselves).
CUDA = torch.device(os.environ.get("ATTNKIT_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _exact_fp32_matmul():
    """No TF32 in matmuls, so that GPU and CPU agree to float32 rounding."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _both(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    return model.eval(), copy.deepcopy(model).to(CUDA).eval()


def _close(cpu: torch.Tensor, gpu: torch.Tensor, tol: float = 1e-4) -> None:
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol)


def _spread(model: nn.Module, std: float = 0.3) -> nn.Module:
    """Larger random weights than the default init, so greedy tokens vary along a sequence."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_on_gpu_equals_cpu(need_weights: bool) -> None:
    torch.manual_seed(0)
    cpu, gpu = _both(MultiHeadAttention(64, 4))
    x = torch.randn(3, 50, 64)
    pad = torch.ones(3, 1, 1, 50, dtype=torch.bool)
    pad[1, ..., 30:] = False
    mask = causal_mask(50) & pad
    a = cpu(x, mask=mask, need_weights=need_weights)
    b = gpu(x.to(CUDA), mask=mask.to(CUDA), need_weights=need_weights)
    _close(a.output, b.output)
    if need_weights:
        _close(a.weights, b.weights)


def test_transformer_logits_greedy_and_beam_on_gpu_equal_cpu() -> None:
    torch.manual_seed(0)
    cpu, gpu = _both(_spread(Transformer(TransformerConfig.tiny(src_vocab_size=40, tgt_vocab_size=40))))
    src = torch.randint(4, 40, (4, 9))
    src[1, 6:] = 0
    tgt = torch.randint(4, 40, (4, 7))
    _close(cpu(src, tgt), gpu(src.to(CUDA), tgt.to(CUDA)))
    bos = torch.full((4, 1), 1)
    greedy = GenerationConfig(max_new_tokens=12, stop_tokens=(2,), pad_id=0)
    a = generate(cpu.start_decoding(src, 14), bos, greedy)
    b = generate(gpu.start_decoding(src.to(CUDA), 14), bos.to(CUDA), greedy)
    assert b.device.type == CUDA.type and torch.equal(a, b.cpu())
    assert len(set(a.flatten().tolist())) > 3  # not vacuous: the tokens vary
    beam = BeamConfig(4, 1.0, 12, 2, 0)
    a = beam_search(cpu.start_decoding(src, 14), bos, beam).tokens
    b = beam_search(gpu.start_decoding(src.to(CUDA), 14), bos.to(CUDA), beam).tokens
    assert torch.equal(a, b.cpu())


def test_gpt_left_padded_generation_on_gpu_equals_cpu() -> None:
    from attnkit.decoding.generate import left_pad

    torch.manual_seed(0)
    cpu, gpu = _both(_spread(GPT(GPTConfig.tiny(vocab_size=50))))
    ids, mask = left_pad([[5, 9, 3, 7, 1], [8, 2], [11, 4, 6]])
    _close(cpu(ids, mask), gpu(ids.to(CUDA), mask.to(CUDA)))
    gen = GenerationConfig(max_new_tokens=15, pad_id=0)
    a = generate(cpu.start_decoding(prompt_mask=mask), ids, gen)
    b = generate(gpu.start_decoding(prompt_mask=mask.to(CUDA)), ids.to(CUDA), gen)
    assert torch.equal(a, b.cpu()) and len(set(a.flatten().tolist())) > 3


def test_bert_on_gpu_equals_cpu() -> None:
    torch.manual_seed(0)
    cpu, gpu = _both(BERT(BERTConfig.tiny(vocab_size=40)))
    ids = torch.randint(0, 40, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[2, 7:] = 0
    a, b = cpu(ids, mask), gpu(ids.to(CUDA), mask.to(CUDA))
    _close(a.hidden, b.hidden)
    _close(a.pooled, b.pooled)


@pytest.mark.parametrize("score", SCORES)
def test_rnn_loss_and_greedy_on_gpu_equal_cpu(score: str) -> None:
    torch.manual_seed(0)
    cpu, gpu = _both(RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=20, tgt_vocab_size=20, score=score)))
    src, tgt = torch.randint(3, 20, (5, 8)), torch.randint(3, 20, (5, 8))
    tin = torch.cat([torch.ones(5, 1, dtype=torch.long), tgt[:, :-1]], 1)
    a = cpu.loss_sum(src, tin, tgt)
    b = gpu.loss_sum(src.to(CUDA), tin.to(CUDA), tgt.to(CUDA))
    _close(a[0], b[0])
    gen = GenerationConfig(max_new_tokens=8)
    bos = torch.ones(5, 1, dtype=torch.long)
    assert torch.equal(generate(cpu.start_decoding(src), bos, gen),
                       generate(gpu.start_decoding(src.to(CUDA)), bos.to(CUDA), gen).cpu())


def test_training_on_gpu_resumes_exactly_and_bf16_is_close(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "training"))
    from _training_toy import ToyModel, ToyTask

    from attnkit.training import TrainConfig, train

    def run(run_dir, **kw):
        cfg = dict(max_steps=12, lr=3e-2, warmup=3, schedule="inverse_sqrt", device=CUDA.type, log_every=1,
                   ckpt_every=0, quiet=True, seed=1)
        torch.manual_seed(0)
        model = ToyModel(dropout=0.2)  # dropout: resume must restore the CUDA random state
        return train(ToyTask(), model, TrainConfig(**{**cfg, **kw}), run_dir), model

    full, m_full = run(tmp_path / "full")
    assert next(m_full.parameters()).device.type == CUDA.type
    part, _ = run(tmp_path / "part", max_steps=5)
    rest, m_rest = run(tmp_path / "part")
    assert part.losses + rest.losses == pytest.approx(full.losses, abs=1e-5, rel=0)
    for a, b in zip(m_full.parameters(), m_rest.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    low, _ = run(tmp_path / "bf16", precision="bf16")
    assert low.losses == pytest.approx(full.losses, rel=5e-2)


def test_every_training_command_trains_and_evaluates_on_the_device(tmp_path) -> None:
    """translate / lm (char, BPE) / mlm / classify train with --device and an evaluation at every step (the
    evaluation code moves its batches to the model's device)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "cli"))
    from _runs import train_tiny_runs

    from attnkit.training.metrics import read_metrics

    runs = train_tiny_runs(tmp_path, ["--device", CUDA.type, "--eval-every", "1"])
    assert set(runs) == {"translate", "lm", "lm_bpe", "mlm", "classify"}
    for name, run in runs.items():
        evals = [r for r in read_metrics(run) if r["kind"] == "eval"]
        assert [r["step"] for r in evals] == [1, 2], name
        assert all(torch.isfinite(torch.tensor(r["val_loss"])) for r in evals), name
