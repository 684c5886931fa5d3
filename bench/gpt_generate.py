"""Generation speed: attnkit GPT vs Hugging Face GPT2LMHeadModel.generate(use_cache=True), same process.

GPT-2 124M shapes, random weights (the same weights in both models), fp32, greedy, a 32-token prompt and
128 new tokens; batch 1 and batch 8. Runs alternate between the two models; tokens/s counts new tokens
(batch x 128) over the whole call, prompt included. Also checks that both produce the same tokens, and
measures the memory-bandwidth bound: the time to read every weight once (a chain of plain F.linear
products with the model's own matrices), which no fp32 decoder can beat per step.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/gpt_generate.py [--repeats 3] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
import transformers

from _timing import best_time, interleaved, timed  # bench/ is on sys.path when run as a script
from attnkit.decoding.generate import GenerationConfig, generate
from attnkit.derived import frozen_weights
from attnkit.kernels import fp32_kernel
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.gpt2 import config_to_hf, state_to_hf


def weight_bytes(model: GPT) -> int:
    """Bytes of the matrices one decoding step reads (every layer's and the output projection)."""
    mats = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return sum(m.weight.numel() * m.weight.element_size() for m in mats)


def weight_stream_seconds(model: GPT, batch: int, packed: bool, repeats: int = 5) -> float:
    """Seconds to read every weight a decoding step must read, once: the chain of the products of each
    layer (q, k, v, out, fc1, fc2) and the output projection on [batch, 768] inputs with the model's own
    fp32 weights (~500 MB for GPT-2 124M, far larger than the caches). ``packed=False``: plain
    ``F.linear`` on the [out, in] weights (what HF's lm_head and a plain nn.Linear read);
    ``packed=True``: attnkit's ``FastLinear`` modules themselves (the process's fp32 kernel,
    ``attnkit.kernels``: oneDNN on the stored weight, or MKL with the [in, out] copy where it is faster),
    inside a frozen-weights block as generate runs them (outside one they are plain ``F.linear``).
    No attention, no LayerNorm: a lower bound on the time of one decoding step with that layout."""
    layers = [(a.q_proj, a.k_proj, a.v_proj, a.out_proj, f.fc1, f.fc2)
              for a, f in ((layer.self_attn, layer.ffn) for layer in model.layers)]
    x = torch.randn(batch, model.config.d_model)

    def lin(m: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
        return m(h) if packed else F.linear(h, m.weight, m.bias)

    def once() -> None:
        h = x
        for q, k, v, o, f1, f2 in layers:
            lin(q, h), lin(k, h), lin(v, h), lin(o, h)
            h = lin(f2, lin(f1, h))
        lin(model.lm_head, h)

    with torch.inference_mode(), frozen_weights():
        return best_time(once, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ours = GPT(GPTConfig.gpt2()).eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config_to_hf(ours.config))).eval()
    hf.load_state_dict(state_to_hf(ours), strict=False)  # lm_head is tied to wte
    n_new = args.new_tokens
    cfg = GenerationConfig(max_new_tokens=n_new)
    results = []
    for b in args.batches:
        prompt = torch.randint(0, ours.config.vocab_size, (b, args.prompt_len))

        def run_ours(prompt: torch.Tensor = prompt) -> torch.Tensor:
            return generate(ours.start_decoding(max_len=args.prompt_len + n_new), prompt, cfg)

        def run_hf(prompt: torch.Tensor = prompt) -> torch.Tensor:
            with torch.inference_mode():
                out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new,
                                  min_new_tokens=n_new, do_sample=False, use_cache=True, pad_token_id=0,
                                  eos_token_id=None)
            return out[:, args.prompt_len :]

        same = torch.equal(run_ours(), run_hf())  # also the warm-up
        stream = weight_stream_seconds(ours, b, packed=False)
        stream_packed = weight_stream_seconds(ours, b, packed=True)
        n_bytes = weight_bytes(ours)
        times = interleaved({"attnkit": timed(run_ours), "hf": timed(run_hf)}, args.repeats)
        tps = {k: b * n_new / min(v) for k, v in times.items()}
        row = {"batch": b, "attnkit_tok_s": tps["attnkit"], "hf_tok_s": tps["hf"],
               "ratio": tps["attnkit"] / tps["hf"], "same_tokens": same, "threads": torch.get_num_threads(),
               "weight_read_ms": stream * 1e3, "weight_mb": n_bytes / 1e6, "bound_tok_s": b / stream,
               "gb_per_s": n_bytes / stream / 1e9, "packed_read_ms": stream_packed * 1e3,
               "packed_bound_tok_s": b / stream_packed}
        results.append(row)
        print(f"batch {b}: attnkit {tps['attnkit']:.1f} tok/s   HF generate {tps['hf']:.1f} tok/s   "
              f"ratio {row['ratio']:.2f}x   identical tokens: {same}   | reading the {n_bytes / 1e6:.0f} MB of "
              f"weights once (F.linear chain): {stream * 1e3:.1f} ms = {row['gb_per_s']:.1f} GB/s -> bound "
              f"{row['bound_tok_s']:.1f} tok/s (attnkit at {tps['attnkit'] / row['bound_tok_s']:.0%}, HF at "
              f"{tps['hf'] / row['bound_tok_s']:.0%} of it); with attnkit's FastLinear ({fp32_kernel()} kernel): "
              f"{stream_packed * 1e3:.1f} ms -> bound {b / stream_packed:.1f} tok/s; "
              f"{torch.get_num_threads()} threads", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
