"""Scoring-function study (spec part 1, items 3-4): the RNN encoder-decoder with each scoring function
(additive, dot, scaled dot, bilinear) and with hard attention (REINFORCE), and the Transformer, each
trained for the same CPU time on one thread (or wall time on a GPU), on a toy translation task, on the demo
task (dates in words -> ISO) and on Multi30k de->en.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/scoring_study.py --out docs/scoring-study.json

Toy task ("reorder"): a source sentence of 4-10 words over 30 words; the target translates each word
through a fixed dictionary and reverses the order, so every output word must attend to one source word
far from the diagonal. Reported per model: greedy sacreBLEU and chrF on held-out sentences, token accuracy
(teacher forced, the next target token's argmax), exact-match rate, training speed (target tokens per
CPU second) and greedy decoding speed (sentences per second, batches of 64).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from torch import nn

from attnkit.data.dates import dates_corpus
from attnkit.data.parallel import read_parallel
from attnkit.evaluation.bleu import corpus_scores
from attnkit.layers.losses import smoothed_cross_entropy
from attnkit.models import num_parameters
from attnkit.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from attnkit.models.transformer import Transformer, TransformerConfig
from attnkit.tasks.translation import Translator, make_batch
from attnkit.tokenizers.subword import PAD_ID, SubwordTokenizer

MODELS = ("rnn-additive", "rnn-dot", "rnn-scaled_dot", "rnn-bilinear", "rnn-hard", "transformer")
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


CPU = torch.device("cpu")

def toy_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    dictionary = list(range(30))
    random.Random(1234).shuffle(dictionary)  # the same dictionary for every split
    src, tgt = [], []
    for _ in range(n):
        words = [rng.randrange(30) for _ in range(rng.randint(4, 10))]
        src.append(" ".join(f"w{w}" for w in words))
        tgt.append(" ".join(f"v{dictionary[w]}" for w in reversed(words)))
    return src, tgt


def build(name: str, vocab: int, size: str) -> nn.Module:
    width = 96 if size == "toy" else 256
    if name == "transformer":
        width = 64 if size == "toy" else width  # about the RNNs' parameter count
        cfg = TransformerConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=width, n_heads=4,
                                d_ff=2 * width, n_encoder_layers=2 if size == "toy" else 3,
                                n_decoder_layers=2 if size == "toy" else 3, dropout=0.1, max_len=128)
        return Transformer(cfg)
    cfg = RNNSeq2SeqConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, d_emb=width, d_hidden=width,
                           cell="gru", score=name.split("-", 1)[1], dropout=0.1)
    return RNNSeq2Seq(cfg)


def loss_of(model: nn.Module, src, tgt_in, tgt_out, smoothing: float):
    if isinstance(model, RNNSeq2Seq):
        return model.loss_sum(src, tgt_in, tgt_out, smoothing=smoothing)
    return smoothed_cross_entropy(model(src, tgt_in), tgt_out, smoothing=smoothing, ignore_index=PAD_ID)


def batches(src_ids, tgt_ids, max_tokens: int, rng: random.Random):
    """Endless length-bucketed batches of about ``max_tokens`` target tokens."""
    order = sorted(range(len(src_ids)), key=lambda i: (len(src_ids[i]), rng.random()))
    groups, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, len(src_ids[i]), len(tgt_ids[i]) + 1)
        if cur and longest * (len(cur) + 1) > max_tokens:
            groups.append(cur)
            cur, longest = [], max(len(src_ids[i]), len(tgt_ids[i]) + 1)
        cur.append(i)
    groups.append(cur)
    while True:
        rng.shuffle(groups)
        yield from groups


def warmup_inverse_sqrt(warmup: int):
    """Learning-rate factor: linear warm-up over ``warmup`` updates, then 1/sqrt decay (1 throughout when
    ``warmup`` is 0)."""
    if warmup <= 0:
        return lambda step: 1.0
    return lambda step: min((step + 1) / warmup, (warmup / (step + 1)) ** 0.5)


def run_one(name: str, task: dict, seconds: float, seed: int, device: torch.device = CPU,
            warmup: int = 0) -> dict:
    torch.manual_seed(seed)
    tok: SubwordTokenizer = task["tok"]
    model = build(name, tok.vocab_size, task["size"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=task["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_inverse_sqrt(warmup))
    stream = batches(task["train_src"], task["train_tgt"], task["max_tokens"], random.Random(seed))
    model.train()
    # the budget: CPU seconds of this process on a CPU (other jobs do not shrink it), wall time on a GPU
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    start, steps, tokens = clock(), 0, 0
    while clock() - start < seconds:
        b = make_batch(task["train_src"], task["train_tgt"], next(stream))
        total, count = loss_of(model, b.src.to(device), b.tgt_in.to(device), b.tgt_out.to(device), 0.1)
        opt.zero_grad()
        (total / count).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        steps, tokens = steps + 1, tokens + int(count)
    train_cpu = clock() - start
    model.eval()
    src_ids, tgt_ids = task["test_src_ids"], task["test_tgt_ids"]
    correct = total_tokens = 0
    with torch.no_grad():
        for i in range(0, len(src_ids), 64):
            idx = list(range(i, min(i + 64, len(src_ids))))
            b = make_batch(src_ids, tgt_ids, idx)
            pred = model(b.src.to(device), b.tgt_in.to(device)).argmax(-1).cpu()
            keep = b.tgt_out != PAD_ID
            correct += int((pred[keep] == b.tgt_out[keep]).sum())
            total_tokens += int(keep.sum())
    translator = Translator(model, tok, tok, 128)
    t0 = time.perf_counter()
    hyp_ids = translator.translate_ids(src_ids, beam_size=1, max_tokens=64 * 40)
    decode_s = time.perf_counter() - t0
    hyps = tok.decode_batch(hyp_ids)
    scores = corpus_scores(hyps, task["test_tgt"])
    exact = sum(h.strip() == r.strip() for h, r in zip(hyps, task["test_tgt"], strict=True)) / len(hyps)
    params = num_parameters(model)
    return {"task": task["name"], "model": name, "parameters": params, "steps": steps,
            "train_cpu_s": round(train_cpu, 1), "train_tok_per_cpu_s": round(tokens / train_cpu),
            "device": device.type, "warmup": warmup,
            "bleu": round(scores.bleu, 2), "chrf": round(scores.chrf, 2),
            "token_accuracy": round(correct / total_tokens, 4), "exact": round(exact, 4),
            "decode_sent_per_s": round(len(src_ids) / decode_s, 1), "sacrebleu": scores.signature}


def make_task(name: str, n_test: int, train_lines: int | None, mt_max_tokens: int = 2500) -> dict:
    if name == "toy":
        train_src, train_tgt = toy_corpus(20000, 0)
        test_src, test_tgt = toy_corpus(n_test, 1)
        vocab, size, max_tokens, lr = 120, "toy", 1500, 2e-3
    elif name == "dates":  # the task of `attnkit demo`: dates written out in words -> ISO dates
        test = dates_corpus(n_test, seed=1)
        train = dates_corpus(20000, seed=0, exclude=set(test.tgt))
        train_src, train_tgt, test_src, test_tgt = train.src, train.tgt, test.src, test.tgt
        vocab, size, max_tokens, lr = 400, "toy", 1500, 2e-3
    else:
        data = SHARED_DATA / "multi30k"
        tr, te = read_parallel(data, "train", "de", "en"), read_parallel(data, "test_2016_flickr", "de", "en")
        train_src, train_tgt = tr.src[:train_lines], tr.tgt[:train_lines]
        test_src, test_tgt = te.src[:n_test], te.tgt[:n_test]
        vocab, size, max_tokens, lr = 4000, "multi30k", mt_max_tokens, 1e-3
    tok = SubwordTokenizer.train(train_src + train_tgt, vocab_size=vocab)
    enc = tok.encode_batch
    return {"name": name, "tok": tok, "size": size, "max_tokens": max_tokens, "lr": lr,
            "train_src": enc(train_src), "train_tgt": enc(train_tgt),
            "test_src_ids": enc(test_src), "test_tgt_ids": enc(test_tgt), "test_tgt": test_tgt}


def table(runs: list[dict]) -> str:
    """One markdown row per run; the budget column says how long and where each model trained."""
    lines = ["| task | model | params | budget | updates | BLEU | chrF | token acc. | exact | train tok/s | "
             "decode sent/s |", "|" + " --- |" * 11]
    for r in runs:
        clock = "GPU wall" if r.get("device", "cpu") != "cpu" else "CPU"
        lines.append(f"| {r['task']} | {r['model']} | {r['parameters']:,} | {r['train_cpu_s']:.0f} {clock} s | "
                     f"{r['steps']:,} | {r['bleu']:.1f} | {r['chrf']:.1f} | {r['token_accuracy']:.3f} | "
                     f"{r['exact']:.3f} | {r['train_tok_per_cpu_s']:,} | {r['decode_sent_per_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/scoring-study.json")
    p.add_argument("--tasks", default="toy,dates,multi30k")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--toy-seconds", type=float, default=20.0, help="CPU seconds of training per toy or dates run")
    p.add_argument("--mt-seconds", type=float, default=40.0, help="CPU seconds of training per Multi30k run")
    p.add_argument("--test", type=int, default=400, help="held-out sentences scored")
    p.add_argument("--train-lines", type=int, default=None, help="Multi30k: first N training pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mt-max-tokens", type=int, default=2500, help="Multi30k: tokens per batch")
    p.add_argument("--warmup", type=int, default=0,
                   help="linear warm-up over N updates then 1/sqrt decay, for every model (0: constant lr)")
    p.add_argument("--device", default="cpu", help="cpu | cuda: on cuda the budgets are wall-clock seconds")
    p.add_argument("--from-json", help="only print the table of these results files (comma-separated)")
    args = p.parse_args()
    if args.from_json:
        print(table([r for f in args.from_json.split(",") for r in json.loads(Path(f).read_text())["runs"]]))
        return
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the machine is shared; budgets are CPU seconds of one thread
    runs = []
    for task_name in args.tasks.split(","):
        task = make_task(task_name, args.test, args.train_lines, args.mt_max_tokens)
        for m in args.models.split(","):
            seconds = args.mt_seconds if task_name == "multi30k" else args.toy_seconds
            r = run_one(m, task, seconds, args.seed, device, args.warmup)
            runs.append(r)
            print(json.dumps(r), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # after every run: partial results survive
            Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
