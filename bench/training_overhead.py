"""Overhead of attnkit's training loop against a bare PyTorch loop on the same model and batches.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/training_overhead.py [--steps 20] [--repeats 3] [--device cpu]

Both train the same small Transformer language model (2 layers, width 128, vocabulary 1000, 16 x 64
tokens per batch) with AdamW for the same number of steps from the same initial weights.  attnkit's loop
adds token-count normalisation, the NaN check, gradient clipping, the schedule, metrics.jsonl and one final
checkpoint.  The script prints both times, the ratio, and the largest loss difference (should be ~1e-6).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from attnkit.training import TrainConfig, train

VOCAB, WIDTH, BATCH, LENGTH = 1000, 128, 16, 64


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, 4, 4 * WIDTH, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        causal = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        return self.head(self.body(self.emb(x), mask=causal, is_causal=True))


class Task:
    family = "bench"

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.data = batches

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return self.data

    def count(self, batch: torch.Tensor) -> int:
        return batch[:, 1:].numel()

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        logits = model(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1), reduction="sum")


def bare_loop(model: nn.Module, batches: list[torch.Tensor], steps: int, device: torch.device) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)].to(device)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    batches = [torch.randint(0, VOCAB, (BATCH, LENGTH + 1)) for _ in range(args.steps)]
    init = TinyLM()
    bare_loop(copy.deepcopy(init).to(device), batches, 3, device)  # warm-up (allocator, kernels)

    cfg = TrainConfig(max_steps=args.steps, lr=1e-3, weight_decay=0.0, clip_norm=None, device=args.device,
                      ckpt_every=0, log_every=10, quiet=True)
    bare_times, our_times = [], []
    for _ in range(args.repeats):  # alternate, so that load from other processes hits both alike
        model = copy.deepcopy(init).to(device)
        t0 = time.perf_counter()
        ref = bare_loop(model, batches, args.steps, device)
        bare_times.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as run:
            t0 = time.perf_counter()
            result = train(Task(batches), copy.deepcopy(init), cfg, run)
            our_times.append(time.perf_counter() - t0)
    bare_s, ours_s = min(bare_times), min(our_times)
    diff = max(abs(a - b) for a, b in zip(result.losses, ref, strict=True))
    print(f"device {device}, {args.steps} steps of {BATCH}x{LENGTH} tokens (best of {args.repeats}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"bare PyTorch loop : {bare_s:7.2f} s  ({args.steps / bare_s:6.2f} steps/s)")
    print(f"attnkit train()   : {ours_s:7.2f} s  ({args.steps / ours_s:6.2f} steps/s, with set-up and checkpoint)")
    print(f"ratio attnkit/bare: {ours_s / bare_s:.3f}   max |loss difference|: {diff:.2e}")


if __name__ == "__main__":
    main()
