"""A tiny next-token task for the training-loop tests (and a script to train it in a subprocess).

Run as ``python tests/training/_training_toy.py RUN_DIR --steps N ...`` (also under torchrun); the losses
of the call are written to ``RUN_DIR/losses-<rank>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

from attnkit.data.resumable import epoch_rng, fixed_size_batches
from attnkit.training import TrainConfig, smoothed_cross_entropy, train

PAD, VOCAB, N_SEQ = 0, 13, 48


class ToyModel(nn.Module):
    def __init__(self, dim: int = 16, dropout: float = 0.0):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.hidden = nn.Linear(dim, 2 * dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * dim, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.out(self.drop(torch.tanh(self.hidden(self.emb(x)))))


def toy_sequences(n: int = N_SEQ, seed: int = 123) -> list[torch.Tensor]:
    rng = epoch_rng(seed, 0)
    return [torch.tensor(rng.integers(1, VOCAB, size=int(rng.integers(3, 10)))) for _ in range(n)]


class ToyTask:
    family = "toy"

    def __init__(self, batch_size: int = 4, seed: int = 0, nan_at_call: int | None = None,
                 sleep: float = 0.0, smoothing: float = 0.1, nan_grad_at_call: int | None = None):
        self.seqs, self.batch_size, self.seed = toy_sequences(), batch_size, seed
        self.nan_at_call, self.sleep, self.smoothing, self.calls = nan_at_call, sleep, smoothing, 0
        self.evaluations, self.nan_grad_at_call = 0, nan_grad_at_call

    def batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for idx in fixed_size_batches(len(self.seqs), self.batch_size, self.seed, epoch):
            seqs = [self.seqs[i] for i in idx]
            padded = nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD)  # (B, T)
            out.append((padded[:, :-1], padded[:, 1:]))
        return out

    def count(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return int((batch[1] != PAD).sum())

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
        x, y = batch
        total, count = smoothed_cross_entropy(model(x), y, smoothing=self.smoothing, ignore_index=PAD)
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            total = total * float("nan")
        if self.nan_grad_at_call is not None and self.calls >= self.nan_grad_at_call:
            total = total + (model(x) * 0).clamp(min=0).sqrt().sum()  # adds 0, but d sqrt(0) = inf * 0 = nan
        return total, count

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self.evaluations += 1
        torch.rand(3)  # consumes global RNG: the loop must restore it
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in self.batches(0)[0])
        total, count = smoothed_cross_entropy(model(x), y, ignore_index=PAD)
        return {"val_loss": float(total / count)}

    def metadata(self) -> dict:
        return {"model_config": {"dim": 16}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--precision", default="fp32")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = ToyModel(dropout=args.dropout)
    cfg = TrainConfig(max_steps=args.steps, lr=3e-2, warmup=2, schedule="inverse_sqrt", ckpt_every=args.ckpt_every,
                      grad_accum=args.grad_accum, device="cpu", log_every=1, quiet=True, precision=args.precision)
    task = ToyTask(batch_size=args.batch_size, sleep=args.sleep)
    result = train(task, model, cfg, args.run_dir)
    rank = int(os.environ.get("RANK", "0"))
    Path(args.run_dir, f"losses-{rank}.json").write_text(
        json.dumps({"losses": result.losses, "step": result.step, "stop_reason": result.stop_reason}))
    print(f"rank {rank} done: step {result.step} ({result.stop_reason})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
