"""Plain text for language modelling: read a file, tokenize it, split train/val, cut batches of blocks.

A text is tokenized once into a flat array of ids; the first ``1 - val_fraction`` of it is the training
split and the rest the validation split (nanoGPT's 90/10 by default), saved as ``.npy`` beside the run.
Training batches are random contiguous blocks (x = ids[o : o + T], y = ids[o + 1 : o + T + 1]) whose
offsets depend only on (seed, epoch, batch index), so a stream of them resumes exactly
(:class:`attnkit.data.resumable.BatchStream`). Evaluation uses consecutive, non-overlapping blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from attnkit.data.lines import decode_text
from attnkit.errors import CheckpointError, InputError


class LMBatch(NamedTuple):
    x: Tensor  # [B, T] input ids
    y: Tensor  # [B, T] next-token targets


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a file (a leading byte-order mark dropped); InputError if it is missing, not UTF-8
    or empty."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the text file ({exc.strerror})") from None
    text = decode_text(data, str(path))
    if not text.strip():
        raise InputError(f"{path}: the text file is empty")
    return text


def to_array(ids: Sequence[int], vocab_size: int) -> np.ndarray:
    """Token ids as the smallest unsigned array that holds the vocabulary (uint16 up to 65536 tokens)."""
    return np.asarray(ids, dtype=np.uint16 if vocab_size <= 2**16 else np.uint32)


def split_ids(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the first ``1 - val_fraction`` of the ids, then the rest."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:]


def save_ids(path: str | Path, ids: np.ndarray) -> None:
    np.save(Path(path), ids, allow_pickle=False)


def load_ids(path: str | Path) -> np.ndarray:
    try:
        return np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the token ids ({exc})") from None


def _blocks(ids: np.ndarray, starts: np.ndarray, t: int) -> LMBatch:
    idx = starts[:, None] + np.arange(t + 1)  # (B, T + 1)
    chunk = torch.from_numpy(ids[idx].astype(np.int64))
    return LMBatch(chunk[:, :-1], chunk[:, 1:])


class RandomBlocks(Sequence[LMBatch]):
    """One epoch of ``num_batches`` batches of ``batch_size`` random contiguous blocks of ``block_size``
    tokens; batch i depends only on (seed, epoch, i) and is built when indexed."""

    def __init__(
        self, ids: np.ndarray, block_size: int, batch_size: int, seed: int, epoch: int, num_batches: int | None = None
    ) -> None:
        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be >= 1, got {block_size}, {batch_size}")
        if len(ids) < block_size + 1:
            raise InputError(
                f"the training text has {len(ids)} tokens, fewer than the context length + 1 ({block_size + 1}); "
                "use a longer text or a smaller context"
            )
        self.ids, self.t, self.b, self.seed, self.epoch = ids, block_size, batch_size, seed, epoch
        self.n = num_batches or max(1, len(ids) // (block_size * batch_size))  # about one pass over the text

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> LMBatch:  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return _blocks(self.ids, rng.integers(0, len(self.ids) - self.t, size=self.b), self.t)


def sequential_blocks(ids: np.ndarray, block_size: int, batch_size: int) -> Iterator[LMBatch]:
    """Consecutive non-overlapping blocks covering every target of ``ids`` once (the last block may be
    shorter and comes in a batch of its own). Each batch is x, y [B, T]."""
    n_targets = len(ids) - 1
    full = n_targets // block_size
    starts = np.arange(full) * block_size
    for i in range(0, full, batch_size):
        yield _blocks(ids, starts[i : i + batch_size], block_size)
    rest = n_targets - full * block_size
    if rest > 0:
        yield _blocks(ids, np.array([full * block_size]), rest)
