"""Generation speed of a Llama-shaped model: attnkit GPT (Llama arguments) vs Hugging Face
LlamaForCausalLM.generate(use_cache=True) and CTranslate2's Generator, same process, same weights.

110.5M parameters: 12 layers, d_model 768, 12 query heads sharing 4 KV heads (grouped-query attention),
SwiGLU d_ff 1536 (Llama's 8/3 ratio, 2048, would give 125M), RMSNorm, RoPE (theta 500000), vocabulary
32000, untied head; random weights (the EOS row of the head zero: its logit 0 never wins, so every side,
CTranslate2 too, generates all the new tokens), fp32, greedy, a 32-token prompt and 128 new tokens; batch 1
and batch 8. CTranslate2 gets the transformers model's ``save_pretrained`` directory (with a word-level
tokenizer of the 32000 ids) through its own converter (``TransformersConverter``), in fp32 and once more
with ``quantization="int8"``; ``--int8`` also times attnkit's ``quantize(model, "int8")`` (the rows
attnkit-int8 and ct2-int8). The sides alternate round by round (bench/_timing.py: attnkit, HF, ct2,
attnkit-int8, ct2-int8) and every round is printed; tokens/s counts new tokens over the whole call, prompt
included, by wall-clock and by the process's CPU time (on a shared machine the second is the steadier: it
does not count the time other processes hold the cores); then the medians and the ratios. Checks that the
fp32 sides produce the same tokens (int8: agreement with fp32) and prints the KV cache attnkit allocates
(only the 4 KV heads) beside the cache of the same model with 12.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/llama_generate.py [--repeats 3] [--batches 1 8] [--int8]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import tempfile
import time
from pathlib import Path

import torch
import transformers

from _ct2 import agreement, convert, machine, report  # bench/ is on sys.path when run as a script
from _timing import interleaved, timed
from attnkit.decoding.generate import GenerationConfig, generate
from attnkit.layers.quant import quantize
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.llama import config_to_hf, state_to_hf

SHAPE = dict(vocab_size=32000, max_len=2048, n_layers=12, n_heads=12, n_kv_heads=4, d_model=768, d_ff=1536,
             bias=False, tie_embeddings=False, eps=1e-5, activation="swiglu", norm="rmsnorm", positions="rope",
             rope_theta=500000.0)
EOS = 2  # <unk> <s> </s>, as Llama's vocabulary


def cache_bytes(model: GPT, batch: int, length: int) -> int:
    """Bytes of the K and V caches a session holds after ``length`` positions of ``batch`` rows."""
    session = model.start_decoding(max_len=length)
    with torch.inference_mode():
        session.step(torch.zeros(batch, length, dtype=torch.long))
    return sum(c.self_attn.k.numel() * 4 + c.self_attn.v.numel() * 4 for c in session.caches)


def save_with_tokenizer(hf: transformers.LlamaForCausalLM, out: Path) -> list[str]:
    """``hf`` and a word-level tokenizer of its 32000 ids (what CTranslate2's converter reads the vocabulary
    and the special tokens from) into ``out``; the vocabulary's strings by id."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = ["<unk>", "<s>", "</s>", *(f"t{i}" for i in range(3, SHAPE["vocab_size"]))]
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>")),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.save_pretrained(out)
    tok.save_pretrained(out)
    return vocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--int8", action="store_true", help="also attnkit-int8 against CTranslate2 int8")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import ctranslate2

    transformers.logging.set_verbosity_error()
    print(machine(), flush=True)
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**SHAPE)).eval()
    with torch.no_grad():
        ours.lm_head.weight[EOS].zero_()
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config_to_hf(ours.config))).eval()
    hf.load_state_dict(state_to_hf(ours), strict=True)
    threads = torch.get_num_threads()
    print(f"{ours.num_parameters() / 1e6:.1f}M parameters; {threads} threads", flush=True)
    models: dict[str, object] = {"attnkit": ours, "HF": hf}
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        vocab = save_with_tokenizer(hf, Path(d) / "hf")
        for name, quant, compute in [("ct2", None, "float32")] + ([("ct2-int8", "int8", "int8")] if args.int8 else []):
            if name == "ct2-int8":
                models["attnkit-int8"] = quantize(copy.deepcopy(ours), "int8")
            models[name] = ctranslate2.Generator(str(convert(Path(d) / "hf", Path(d) / name, quant)), device="cpu",
                                                 compute_type=compute, inter_threads=1, intra_threads=threads)
        print(f"CTranslate2 converted (TransformersConverter) and loaded in {time.perf_counter() - t:.1f} s",
              flush=True)
    ids = {s: i for i, s in enumerate(vocab)}
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
        strings = [[vocab[i] for i in row] for row in prompt.tolist()]

        def run_side(side: str, prompt: torch.Tensor = prompt, strings: list = strings) -> list[list[int]]:
            if side == "HF":
                with torch.inference_mode():
                    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new,
                                      min_new_tokens=n_new, do_sample=False, use_cache=True, pad_token_id=0,
                                      eos_token_id=None)
                return out[:, t0:].tolist()
            if side.startswith("ct2"):
                res = models[side].generate_batch(strings, max_length=n_new, sampling_topk=1, beam_size=1,
                                                  include_prompt_in_result=False)
                return [[ids[s] for s in r.sequences[0]] for r in res]
            return generate(models[side].start_decoding(max_len=total), prompt, cfg).tolist()

        start = time.perf_counter()
        outputs = {side: run_side(side) for side in models}  # also the warm-up
        print(f"batch {b}: warm-up {time.perf_counter() - start:.1f} s", flush=True)
        assert all(len(o) == b and all(len(r) == n_new for r in o) for o in outputs.values()), "a side stopped early"
        checks = {}
        for x, y in [("attnkit", "HF"), ("attnkit", "ct2"), ("attnkit-int8", "attnkit"), ("ct2-int8", "ct2"),
                     ("attnkit-int8", "ct2-int8")]:
            if x in outputs and y in outputs:
                same, tok = agreement(outputs[x], outputs[y])
                checks[f"{x} vs {y}"] = {"identical": same, "token_agreement": tok}
                print(f"  {x} vs {y}: identical tokens in {same:.0%} of the rows, {tok:.1%} of positions agree",
                      flush=True)

        def timing(name: str, b: int = b):  # noqa: ANN202
            def run(rnd: int) -> tuple[float, float]:
                cpu = time.process_time()
                s = timed(functools.partial(run_side, name))(rnd)
                cpu = time.process_time() - cpu
                print(f"  batch {b} round {rnd + 1} {name}: {s:.2f} s = {b * n_new / s:.1f} tok/s (CPU time "
                      f"{cpu:.2f} s = {b * n_new / cpu:.1f} tok/s of CPU)", flush=True)
                return s, cpu
            return run

        runs = interleaved({side: timing(side) for side in models}, args.repeats)
        pairs = [("attnkit", "HF"), ("attnkit", "ct2")]
        pairs += [("attnkit-int8", "ct2-int8"), ("attnkit-int8", "ct2")] if args.int8 else []
        wall = report(f"batch {b}, by wall-clock", "new tokens/s",
                      {k: [b * n_new / w for w, _ in v] for k, v in runs.items()}, pairs)
        cpu = report(f"batch {b}, by CPU time", "new tokens per CPU second",
                     {k: [b * n_new / c for _, c in v] for k, v in runs.items()}, pairs)
        results.append({"batch": b, "threads": threads, "checks": checks, "seconds": runs, "wall_tok_s": wall,
                        "cpu_tok_s": cpu})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"kv_cache_mb": {"4_kv_heads": grouped / 1e6, "12_kv_heads": whole / 1e6}, "rows": results},
                      f, indent=2)


if __name__ == "__main__":
    main()
