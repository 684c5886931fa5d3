"""No stale derived weights (issue 13): after optimizer steps of every optimizer the project offers (fused
kernels too), after ``load_state_dict`` and after writes through ``.data``, inference in the same process
equals a freshly built model loaded from the same state dict, exactly.

Each family's inference runs the paths that reuse derived weights: the stacked q/k/v product (a batch of
at least 64 tokens) and FastLinear's [in, out] copy (one-sentence greedy decoding), inside frozen-weights
blocks, once before training (so that copies exist) and once after."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.decoding.beam import BeamConfig, beam_search
from attnkit.decoding.generate import GenerationConfig, generate
from attnkit.derived import frozen_weights
from attnkit.kernels import FP32_KERNELS, using_fp32_kernel
from attnkit.models.bert import BERTConfig, BERTForMaskedLM, mean_pool
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from attnkit.models.transformer import Transformer, TransformerConfig

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "adamw-fused": lambda ps: torch.optim.AdamW(ps, lr=3e-2, fused=True),
    "adamw-foreach": lambda ps: torch.optim.AdamW(ps, lr=3e-2, foreach=True),
    "adamw-for-loop": lambda ps: torch.optim.AdamW(ps, lr=3e-2, foreach=False),
    "adam-fused": lambda ps: torch.optim.Adam(ps, lr=3e-2, fused=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=3e-2),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9),
}

V = 40


@pytest.fixture(autouse=True, params=FP32_KERNELS)
def fp32_kernel(request: pytest.FixtureRequest):  # noqa: ANN201
    """Every check under both fp32 inference kernels (the "mkl" one holds FastLinear's [in, out] copies)."""
    with using_fp32_kernel(request.param):
        yield request.param


def _ids(*shape: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, shape, generator=g)


class Family:
    """How to build, train and run one model family for these checks."""

    def __init__(self, build: Callable[[], nn.Module], loss: Callable[[nn.Module], Tensor],
                 infer: Callable[[nn.Module], dict[str, Tensor]]) -> None:
        self.build, self.loss, self.infer = build, loss, infer


def _seq2seq_infer(model: nn.Module) -> dict[str, Tensor]:
    src, tgt = _ids(8, 9, seed=1), _ids(8, 9, seed=2)  # 72 tokens: the stacked-projection path
    with torch.no_grad(), frozen_weights():
        logits = model(src, tgt)
    one = generate(model.start_decoding(src[:1], 12), torch.ones(1, 1, dtype=torch.long),
                   GenerationConfig(10, stop_tokens=(2,)))  # one row: FastLinear's copy
    beams = beam_search(model.start_decoding(src[:3], 12), torch.ones(3, 1, dtype=torch.long),
                        BeamConfig(4, 1.0, 10, 2, 0)).tokens
    return {"logits": logits, "greedy": one, "beam": beams}


def _seq2seq_loss(model: nn.Module) -> Tensor:
    src, tgt = _ids(6, 7, seed=3), _ids(6, 8, seed=4)
    return F.cross_entropy(model(src, tgt[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten())


def _gpt_infer(model: nn.Module) -> dict[str, Tensor]:
    idx = _ids(4, 20, seed=5)  # 80 tokens
    with torch.no_grad(), frozen_weights():
        logits = model(idx)
    greedy = generate(model.start_decoding(max_len=24), idx[:1, :5], GenerationConfig(16))
    return {"logits": logits, "greedy": greedy}


def _gpt_loss(model: nn.Module) -> Tensor:
    idx = _ids(4, 17, seed=6)
    return F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())


def _bert_infer(model: nn.Module) -> dict[str, Tensor]:
    ids = _ids(6, 12, seed=7)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad(), frozen_weights():
        hidden = model.bert.encode(ids, mask).hidden
        logits = model(ids, mask).logits
    return {"hidden": hidden, "embeddings": mean_pool(hidden, mask), "logits": logits}


def _bert_loss(model: nn.Module) -> Tensor:
    ids = _ids(4, 12, seed=8)
    return F.cross_entropy(model(ids).logits.flatten(0, 1), _ids(4, 12, seed=9).flatten())


def _scaled(model: nn.Module) -> nn.Module:
    """Larger weights than the initialisation, so that greedy tokens vary and a stale copy shows."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


FAMILIES = {
    "transformer": Family(
        lambda: _scaled(Transformer(TransformerConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, max_len=32))),
        _seq2seq_loss, _seq2seq_infer),
    "rnn": Family(
        lambda: _scaled(RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=V, tgt_vocab_size=V, dropout=0.0))),
        _seq2seq_loss, _seq2seq_infer),
    "gpt": Family(lambda: _scaled(GPT(GPTConfig.tiny(vocab_size=V))), _gpt_loss, _gpt_infer),
    "bert": Family(lambda: _scaled(BERTForMaskedLM(BERTConfig.tiny(vocab_size=V, dropout=0.0, attn_dropout=0.0))),
                   _bert_loss, _bert_infer),
}


def _fresh_copy(family: Family, model: nn.Module) -> nn.Module:
    fresh = family.build()
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


def _assert_same(got: dict[str, Tensor], want: dict[str, Tensor]) -> None:
    for key in want:
        assert torch.equal(got[key], want[key]), key


def _train(family: Family, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        family.loss(model).backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_inference_after_optimizer_steps_equals_a_fresh_model(family_name: str, opt_name: str) -> None:
    torch.manual_seed(0)
    family = FAMILIES[family_name]
    model = family.build()
    before = family.infer(model)  # derived copies are made here
    _train(family, model, OPTIMIZERS[opt_name](list(model.parameters())))
    after = family.infer(model)
    _assert_same(after, family.infer(_fresh_copy(family, model)))
    assert not all(torch.equal(after[k], before[k]) for k in before)  # training changed the outputs


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_optimizer_steps_inside_a_held_frozen_block_are_seen(family_name: str) -> None:
    """A caller that holds one block around training and evaluation (a server, a notebook): every optimizer
    step drops the copies, the fused AdamW kernel included (it does not bump version counters)."""
    torch.manual_seed(0)
    family = FAMILIES[family_name]
    model = family.build()
    with frozen_weights():
        family.infer(model)
        _train(family, model, OPTIMIZERS["adamw-fused"](list(model.parameters())))
        after = family.infer(model)
    _assert_same(after, family.infer(_fresh_copy(family, model)))


def _two_models(family_name: str) -> tuple[Family, nn.Module, nn.Module]:
    """The family and two of its models with different weights."""
    family = FAMILIES[family_name]
    torch.manual_seed(1)
    model = family.build()
    torch.manual_seed(2)
    return family, model, family.build()


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_load_state_dict_into_a_model_that_served_a_forward(family_name: str) -> None:
    family, model, other = _two_models(family_name)
    want = family.infer(other)
    with frozen_weights():  # even inside one block: load_state_dict drops the copies
        family.infer(model)
        model.load_state_dict(other.state_dict())
        _assert_same(family.infer(model), want)
    model.load_state_dict(family.build().state_dict())  # and between blocks
    family.infer(model)
    model.load_state_dict(other.state_dict())
    _assert_same(family.infer(model), want)


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_writes_through_data_between_calls_are_seen(family_name: str) -> None:
    """``p.data.copy_()`` bumps no version counter; the next call's block starts without copies."""
    family, model, other = _two_models(family_name)
    family.infer(model)
    with torch.no_grad():
        for p, q in zip(model.parameters(), other.parameters(), strict=True):
            p.data.copy_(q)
    _assert_same(family.infer(model), family.infer(other))
