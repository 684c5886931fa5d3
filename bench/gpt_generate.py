"""Generation speed: attnkit GPT vs Hugging Face GPT2LMHeadModel.generate(use_cache=True), same process.

GPT-2 124M shapes, random weights (the same weights in both models), fp32, greedy, a 32-token prompt and
128 new tokens; batch 1 and batch 8. Runs alternate between the two models; tokens/s counts new tokens
(batch x 128) over the whole call, prompt included. Also checks that both produce the same tokens.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/gpt_generate.py [--repeats 3] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import transformers

from attnkit.decoding.generate import GenerationConfig, generate
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.gpt2 import config_to_hf, state_to_hf


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
        times = {"attnkit": [], "hf": []}

        def run_ours(prompt: torch.Tensor = prompt) -> torch.Tensor:
            return generate(ours.session(max_len=args.prompt_len + n_new), prompt, cfg)

        def run_hf(prompt: torch.Tensor = prompt) -> torch.Tensor:
            with torch.inference_mode():
                out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new,
                                  min_new_tokens=n_new, do_sample=False, use_cache=True, pad_token_id=0,
                                  eos_token_id=None)
            return out[:, args.prompt_len :]

        same = torch.equal(run_ours(), run_hf())  # also the warm-up
        for _ in range(args.repeats):
            for name, fn in (("attnkit", run_ours), ("hf", run_hf)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        tps = {k: b * n_new / min(v) for k, v in times.items()}
        row = {"batch": b, "attnkit_tok_s": tps["attnkit"], "hf_tok_s": tps["hf"],
               "ratio": tps["attnkit"] / tps["hf"], "same_tokens": same}
        results.append(row)
        print(f"batch {b}: attnkit {tps['attnkit']:.1f} tok/s   HF generate {tps['hf']:.1f} tok/s   "
              f"ratio {row['ratio']:.2f}x   identical tokens: {same}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
