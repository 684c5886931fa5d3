"""Generation speed of a Llama-shaped model: attnkit GPT (Llama arguments) vs Hugging Face
LlamaForCausalLM.generate(use_cache=True), same process, same weights.

110.5M parameters: 12 layers, d_model 768, 12 query heads sharing 4 KV heads (grouped-query attention),
SwiGLU d_ff 1536 (Llama's 8/3 ratio, 2048, would give 125M), RMSNorm, RoPE (theta 500000), vocabulary
32000, untied head; random weights, fp32, greedy, a 32-token prompt and 128 new tokens; batch 1 and
batch 8. The two models alternate round by round (bench/_timing.py) and every round is printed; tokens/s
counts new tokens over the whole call, prompt included, by wall-clock and by the process's CPU time (on a
shared machine the second is the steadier: it does not count the time other processes hold the cores).
Also checks that both produce the same tokens and
prints the KV cache attnkit allocates (only the 4 KV heads) beside the cache of the same model with 12.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/llama_generate.py [--repeats 3] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import transformers

from _timing import interleaved, timed  # bench/ is on sys.path when run as a script
from attnkit.decoding.generate import GenerationConfig, generate
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.llama import config_to_hf, state_to_hf

SHAPE = dict(vocab_size=32000, max_len=2048, n_layers=12, n_heads=12, n_kv_heads=4, d_model=768, d_ff=1536,
             bias=False, tie_embeddings=False, eps=1e-5, activation="swiglu", norm="rmsnorm", positions="rope",
             rope_theta=500000.0)


def cache_bytes(model: GPT, batch: int, length: int) -> int:
    """Bytes of the K and V caches a session holds after ``length`` positions of ``batch`` rows."""
    session = model.start_decoding(max_len=length)
    with torch.inference_mode():
        session.step(torch.zeros(batch, length, dtype=torch.long))
    return sum(c.self_attn.k.numel() * 4 + c.self_attn.v.numel() * 4 for c in session.caches)


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
    ours = GPT(GPTConfig(**SHAPE)).eval()
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config_to_hf(ours.config))).eval()
    hf.load_state_dict(state_to_hf(ours), strict=True)
    print(f"{ours.num_parameters() / 1e6:.1f}M parameters; {torch.get_num_threads()} threads", flush=True)
    n_new, t0 = args.new_tokens, args.prompt_len
    total = t0 + n_new
    full = GPT(GPTConfig(**{**SHAPE, "n_kv_heads": None, "n_layers": 1}))
    grouped = cache_bytes(GPT(GPTConfig(**{**SHAPE, "n_layers": 1})), 8, total) * SHAPE["n_layers"]
    whole = cache_bytes(full, 8, total) * SHAPE["n_layers"]
    print(f"KV cache, batch 8 x {total} positions: {grouped / 1e6:.1f} MB with 4 KV heads, {whole / 1e6:.1f} MB "
          f"with 12 (ratio {grouped / whole:.3f})", flush=True)
    cfg = GenerationConfig(max_new_tokens=n_new)
    results = []
    for b in args.batches:
        prompt = torch.randint(0, SHAPE["vocab_size"], (b, t0))

        def run_ours(prompt: torch.Tensor = prompt) -> torch.Tensor:
            return generate(ours.start_decoding(max_len=total), prompt, cfg)

        def run_hf(prompt: torch.Tensor = prompt) -> torch.Tensor:
            with torch.inference_mode():
                out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new,
                                  min_new_tokens=n_new, do_sample=False, use_cache=True, pad_token_id=0,
                                  eos_token_id=None)
            return out[:, t0:]

        start = time.perf_counter()
        mine, theirs = run_ours(), run_hf()  # also the warm-up
        same = torch.equal(mine, theirs)
        agree = float((mine == theirs).float().mean())
        print(f"batch {b}: warm-up {time.perf_counter() - start:.1f} s; identical tokens: {same} "
              f"({agree:.1%} of positions agree)", flush=True)

        def report(name: str, fn, b: int = b):  # noqa: ANN001, ANN202
            def run(r: int) -> tuple[float, float]:
                cpu = time.process_time()
                s = timed(fn)(r)
                cpu = time.process_time() - cpu
                print(f"  batch {b} round {r + 1} {name}: {s:.2f} s = {b * n_new / s:.1f} tok/s (CPU time "
                      f"{cpu:.2f} s = {b * n_new / cpu:.1f} tok/s of CPU)", flush=True)
                return s, cpu
            return run

        runs = interleaved({"attnkit": report("attnkit", run_ours), "hf": report("HF generate", run_hf)},
                           args.repeats)
        wall = {k: [w for w, _ in v] for k, v in runs.items()}
        cpu = {k: [c for _, c in v] for k, v in runs.items()}
        tps = {k: b * n_new / min(v) for k, v in wall.items()}
        cps = {k: b * n_new / min(v) for k, v in cpu.items()}
        row = {"batch": b, "attnkit_tok_s": tps["attnkit"], "hf_tok_s": tps["hf"], "ratio": tps["attnkit"] / tps["hf"],
               "attnkit_s": wall["attnkit"], "hf_s": wall["hf"], "attnkit_cpu_s": cpu["attnkit"], "hf_cpu_s": cpu["hf"],
               "cpu_ratio": cps["attnkit"] / cps["hf"], "same_tokens": same, "agree": agree,
               "threads": torch.get_num_threads()}
        results.append(row)
        print(f"batch {b}: best attnkit {tps['attnkit']:.1f} tok/s   HF generate {tps['hf']:.1f} tok/s   "
              f"ratio {row['ratio']:.2f}x; by CPU time {cps['attnkit']:.1f} vs {cps['hf']:.1f} tok/s, ratio "
              f"{row['cpu_ratio']:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"kv_cache_mb": {"4_kv_heads": grouped / 1e6, "12_kv_heads": whole / 1e6}, "rows": results},
                      f, indent=2)


if __name__ == "__main__":
    main()
