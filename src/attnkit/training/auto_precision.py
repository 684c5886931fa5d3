"""``--precision auto`` for training: time the model's own training step in each precision the hardware
runs natively and keep the faster one.

Why measure instead of a rule: whether bf16 autocast pays depends on the model as much as on the CPU. On
an AMX Xeon a large bf16 matrix product runs about 4.5x faster than fp32, yet issue 20 measured bf16
training at 1.0-1.2x fp32 for the d 256 translation model and 0.75x for nanoGPT's character model (the
casts and the fp32 operations around small products cost more than the products save). So the choice is
made per run, on the run's first batch, before the first update:

* candidates: fp32 always; bf16 on a CPU with native bf16 units (AVX512-BF16 or AMX, as
  :func:`attnkit.layers.quant.capabilities` reports) or a GPU that supports it; fp16 on a GPU without bf16.
  On a GPU low precision is taken without timing (tensor cores); a CPU without native bf16 gets fp32 with
  no timing (emulated bf16 is slower).
* the probe: ``WARMUP_ROUNDS`` untimed then ``repeats`` timed rounds, each one forward+backward pass of the
  first training batch per candidate under that candidate's autocast (the candidates alternate within a
  round, so a slow moment of a shared machine hits both; the median per candidate is compared); gradients
  are dropped and every random generator is restored afterwards, so the weights, the data order and the
  dropout stream of the run are those of a run started with the chosen precision. Under torchrun the
  timings are summed over the processes, so all choose alike.
* a low precision is kept only if it is at least ``MIN_GAIN`` faster (ties go to fp32's accuracy).

The choice is written to ``train_config.json`` (and the timings to ``run.json``), so a resumed run keeps
it. The probe's seconds count against ``--time-limit``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from attnkit.layers.quant import capabilities
from attnkit.training.optim import autocast

MIN_GAIN = 1.05  # a low precision must be at least 5% faster than fp32 to be chosen
WARMUP_ROUNDS = 2  # untimed rounds first: oneDNN creates its kernels for each new shape and dtype


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32", "bf16" or "fp16"
    reason: str  # one sentence for the user
    seconds: dict[str, float]  # median timed step per candidate (empty when nothing was timed)


def candidates(device: torch.device) -> tuple[list[str], str]:
    """The precisions worth timing on ``device``, and why (one phrase)."""
    if device.type == "cuda":
        return (["bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]), "a GPU: tensor cores, no timing"
    caps = capabilities(device)
    if caps.bf16:
        return ["fp32", "bf16"], f"the CPU has native bf16 ({', '.join(caps.names)}): timed"
    return ["fp32"], "the CPU has no native bf16 units (AVX512-BF16 / AMX): bf16 would be emulated"


def choose_precision(step: Callable[[], torch.Tensor], model: nn.Module, device: torch.device,
                     repeats: int = 3, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> PrecisionChoice:
    """Pick the training precision for ``model`` on ``device``. ``step()`` returns the loss of one training
    batch (it runs under the autocast set here); ``reduce`` sums a tensor over processes (torchrun)."""
    names, why = candidates(device)
    if len(names) == 1:
        return PrecisionChoice(names[0], f"{names[0]}: {why}", {})
    from attnkit.training import checkpoint as ck  # the random-state helpers (import here: no cycle)

    state = ck.capture_rng_state()
    was_training = model.training
    model.train()
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for i in range(WARMUP_ROUNDS + repeats):  # rounds alternate the candidates; the first are warm-ups
            for name in names:
                start = clock()
                with autocast(name, device):
                    loss = step()
                loss.float().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed = clock() - start
                if i >= WARMUP_ROUNDS:
                    times[name].append(elapsed)
                model.zero_grad(set_to_none=True)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        ck.restore_rng_state(state)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    if reduce is not None:
        summed = reduce(torch.tensor([seconds[n] for n in names], dtype=torch.float64, device=device)).tolist()
        seconds = dict(zip(names, summed, strict=True))
    low = min((n for n in names if n != "fp32"), key=lambda n: seconds[n])
    gain = seconds["fp32"] / seconds[low]
    timing = ", ".join(f"{n} {seconds[n] * 1e3:.0f} ms" for n in names)
    if gain >= MIN_GAIN:
        return PrecisionChoice(low, f"{low}: {gain:.2f}x fp32's step on this model ({timing}; {why})", seconds)
    return PrecisionChoice("fp32", f"fp32: {low} gave {gain:.2f}x fp32's step, under {MIN_GAIN:.2f}x "
                                   f"({timing}; {why})", seconds)
