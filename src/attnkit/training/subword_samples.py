"""Per-epoch BPE-dropout samples of a training corpus, kept in the run directory so that a resumed run
reads the very segmentations it trained on (`tokenizers` draws BPE-dropout from an unseeded generator;
see :mod:`attnkit.tokenizers.subword`).

Epoch ``e``'s sample is ``DIR/epoch-{e:05d}.safetensors``: for the source and the target side, the ids of
all pairs one after the other (``src_ids``, ``tgt_ids``: int32 [total]) and where each pair starts
(``src_starts``, ``tgt_starts``: int64 [pairs + 1]). It is written atomically the first time the epoch is
asked for and read back after that; files of epochs before ``e - 1`` are then removed (a resumed run
only ever asks for the epoch it stopped in and the ones after it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load, save

from attnkit.errors import CheckpointError
from attnkit.training.checkpoint import atomic_write_bytes

IdLists = list[list[int]]


def _flat(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    starts = torch.zeros(len(rows) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=starts[1:])
    ids = torch.tensor([i for r in rows for i in r], dtype=torch.int32)
    return ids, starts


def _rows(ids: torch.Tensor, starts: torch.Tensor) -> IdLists:
    flat, bounds = ids.tolist(), starts.tolist()
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class EpochSamples:
    """``get(epoch) -> (src_ids, tgt_ids)``: the sample ``draw()`` gave for that epoch, drawn once and kept
    in ``directory``; ``pairs`` is the corpus size every sample must have."""

    def __init__(self, directory: str | Path, draw: Callable[[], tuple[IdLists, IdLists]], pairs: int) -> None:
        self.directory, self.draw, self.pairs = Path(directory), draw, pairs
        self._held: dict[int, tuple[IdLists, IdLists]] = {}

    def path(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch:05d}.safetensors"

    def get(self, epoch: int) -> tuple[IdLists, IdLists]:
        if epoch not in self._held:
            path = self.path(epoch)
            sample = self._read(path) if path.is_file() else self._write(path)
            self._held = {e: s for e, s in self._held.items() if e >= epoch - 1}
            self._held[epoch] = sample
            self._prune(epoch)
        return self._held[epoch]

    def _write(self, path: Path) -> tuple[IdLists, IdLists]:
        src, tgt = self.draw()
        if len(src) != self.pairs or len(tgt) != self.pairs:
            raise ValueError(f"a sample has {len(src)}/{len(tgt)} pairs, the corpus {self.pairs}")
        (src_ids, src_starts), (tgt_ids, tgt_starts) = _flat(src), _flat(tgt)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"src_ids": src_ids, "src_starts": src_starts, "tgt_ids": tgt_ids,
                                       "tgt_starts": tgt_starts}))
        return src, tgt

    def _read(self, path: Path) -> tuple[IdLists, IdLists]:
        try:
            t = load(path.read_bytes())
            src, tgt = _rows(t["src_ids"], t["src_starts"]), _rows(t["tgt_ids"], t["tgt_starts"])
        except Exception as exc:  # a damaged file: resuming on another sample would not be exact
            raise CheckpointError(f"{path}: unreadable BPE-dropout sample ({exc}); delete it to draw a new one "
                                  "(the resumed run then differs from an uninterrupted one)") from None
        if len(src) != self.pairs or len(tgt) != self.pairs:
            raise CheckpointError(f"{path}: a sample of {len(src)} pairs, but the corpus has {self.pairs} "
                                  "(was the run started on other data or --max-train-lines?)")
        return src, tgt

    def _prune(self, epoch: int) -> None:
        for old in self.directory.glob("epoch-*.safetensors"):
            stem = old.stem.removeprefix("epoch-")
            if stem.isdigit() and int(stem) < epoch - 1:
                old.unlink(missing_ok=True)
