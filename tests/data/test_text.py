"""Text files for language modelling: reading, 90/10 split, random contiguous blocks (resumable), and the
sequential evaluation blocks and perplexity against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit.data.resumable import BatchStream, DataPosition
from attnkit.data.text import RandomBlocks, load_ids, read_text, save_ids, sequential_blocks, split_ids, to_array
from attnkit.errors import InputError
from attnkit.evaluation.perplexity import evaluate_lm
from attnkit.models.gpt import GPT, GPTConfig


def test_read_text_errors(tmp_path) -> None:
    (tmp_path / "ok.txt").write_text("héllo\n", encoding="utf-8")
    assert read_text(tmp_path / "ok.txt") == "héllo\n"
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("h\xe9llo".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.txt is not valid UTF-8 \(line 1: .* at byte 1\)"):
        read_text(tmp_path / "latin1.txt")
    with pytest.raises(InputError, match="cannot read"):
        read_text(tmp_path / "missing.txt")


def test_split_and_storage(tmp_path) -> None:
    ids = to_array(list(range(1000)), vocab_size=70000)
    assert ids.dtype == np.uint32 and to_array([1], 65).dtype == np.uint16
    train, val = split_ids(ids)
    assert len(train) == 900 and len(val) == 100 and train[-1] + 1 == val[0]
    save_ids(tmp_path / "t.npy", train)
    assert np.array_equal(load_ids(tmp_path / "t.npy"), train)
    with pytest.raises(InputError):
        split_ids(ids, 1.0)


def test_random_blocks_are_contiguous_shifted_and_deterministic() -> None:
    ids = np.arange(500, dtype=np.uint16)
    epoch = RandomBlocks(ids, block_size=16, batch_size=4, seed=7, epoch=0)
    assert len(epoch) == 500 // 64
    x, y = epoch[3]
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:] , x[:, :-1] + 1) and torch.equal(y, x + 1)  # contiguous, targets shifted
    assert int(y.max()) <= 499
    assert torch.equal(RandomBlocks(ids, 16, 4, 7, 0)[3].x, x)
    assert not torch.equal(RandomBlocks(ids, 16, 4, 7, 1)[3].x, x)
    with pytest.raises(InputError, match="fewer than the context"):
        RandomBlocks(ids[:10], 16, 4, 0, 0)


def test_stream_of_blocks_resumes_exactly() -> None:
    ids = np.arange(300, dtype=np.uint16)
    make = lambda e: RandomBlocks(ids, 8, 2, 1, e)  # noqa: E731
    full = BatchStream(make)
    seq = [full.next_step(1)[0].x for _ in range(12)]
    part = BatchStream(make)
    for _ in range(5):
        part.next_step(1)
    resumed = BatchStream(make, DataPosition.from_dict(part.position.to_dict()))
    for expected in seq[5:]:
        assert torch.equal(resumed.next_step(1)[0].x, expected)


def test_sequential_blocks_cover_every_target_once() -> None:
    ids = np.arange(103)
    targets = []
    for x, y in sequential_blocks(ids, block_size=10, batch_size=3):
        assert torch.equal(y, x + 1)
        targets += y.flatten().tolist()
    assert targets == list(range(1, 103))


def test_perplexity_equals_direct_computation() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=30, max_len=8)).double()
    ids = np.random.default_rng(0).integers(0, 30, 61)
    ev = evaluate_lm(model, ids, block_size=8, batch_size=3)
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, 60, 8):
            chunk = torch.tensor(ids[start : min(start + 9, 61)])[None]
            logp = F.log_softmax(model(chunk[:, :-1]), -1)
            total -= logp[0].gather(1, chunk[0, 1:, None]).sum().item()
            n += chunk.shape[1] - 1
    assert ev.tokens == n == 60
    assert ev.loss == pytest.approx(total / n, rel=1e-9)
    assert ev.perplexity == pytest.approx(math.exp(total / n))
