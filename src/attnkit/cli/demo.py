"""`attnkit demo`: the main job on a built-in default, with no external data.

Generates a parallel corpus of dates written out in words in many formats -> ISO dates
(:mod:`attnkit.data.dates`), trains a small Transformer on it (a few minutes at most on 2 CPU cores, through
the shared training loop), prints sample translations and the exact-match accuracy on held-out dates never
seen in training, and writes a PNG of the encoder-decoder attention, which shows the alignment (each
digit of the year attends to the year's words, the month digits to the month, ...). The run directory is
a normal translation run: ``attnkit translate run DIR`` translates more dates afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from attnkit.data.dates import dates_corpus
from attnkit.errors import InputError
from attnkit.models.seq2seq import TranslationTask, Translator, finalize_weights
from attnkit.models.transformer import Transformer, TransformerConfig
from attnkit.tokenizers.subword import BOS_ID, SubwordTokenizer
from attnkit.training import TrainConfig, train
from attnkit.training.checkpoint import RUN_FILE, read_meta_file
from attnkit.viz.heatmap import plot_attention


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small Transformer to translate written dates to ISO dates")
    p.add_argument("--out", default="attnkit-demo", help="run directory (default %(default)s; replaced if it "
                   "holds an earlier demo)")
    p.add_argument("--train-size", type=int, default=30000, help="training pairs (default %(default)s)")
    p.add_argument("--test-size", type=int, default=1000, help="held-out pairs (default %(default)s)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer updates (default %(default)s)")
    p.add_argument("--time-limit", type=float, default=150.0, help="training seconds at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _prepare_out(out: Path) -> None:
    if out.exists():
        meta = read_meta_file(out / RUN_FILE) if (out / RUN_FILE).is_file() else {}
        if meta.get("demo") is not True:
            raise InputError(f"{out} exists and is not an earlier demo run; choose another --out")
        shutil.rmtree(out)


def _target_tokenizer(texts: list[str]) -> SubwordTokenizer:
    """Characters only (vocabulary = specials + alphabet: no merges), so every digit is its own token."""
    alphabet = {c for t in texts for c in t} | {"▁"}
    return SubwordTokenizer.train(texts, vocab_size=4 + len(alphabet), min_frequency=1)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = Path(args.out)
    _prepare_out(out)
    test = dates_corpus(args.test_size, seed=args.seed + 1)
    train_set = dates_corpus(args.train_size, seed=args.seed, exclude=set(test.tgt))
    src_tok = SubwordTokenizer.train(train_set.src, vocab_size=400)
    tgt_tok = _target_tokenizer(train_set.tgt)
    cfg = TransformerConfig(src_vocab_size=src_tok.vocab_size, tgt_vocab_size=tgt_tok.vocab_size, d_model=128,
                            num_heads=4, d_ff=256, num_encoder_layers=2, num_decoder_layers=2, dropout=0.0,
                            max_len=64, share_embeddings=False)
    model = Transformer(cfg)
    meta = {"arch": "transformer", "src": "words", "tgt": "iso", "joint": False, "model_config": cfg.to_dict(),
            "max_len": cfg.max_len, "demo": True}
    task = TranslationTask(src_tok.encode_batch(train_set.src), tgt_tok.encode_batch(train_set.tgt), 2048,
                           args.seed, 0.0, meta, src_tok, tgt_tok)
    tcfg = TrainConfig(max_steps=args.steps, lr=2e-3, warmup=150, schedule="cosine", min_lr=1e-4, clip_norm=1.0,
                       ckpt_every=0, keep_last=1, log_every=50, seed=args.seed, time_limit_s=args.time_limit,
                       quiet=args.quiet)
    print(f"attnkit demo: {len(train_set)} training pairs of written dates -> ISO dates, a Transformer with "
          f"{model.num_parameters() / 1e6:.2f}M parameters; training for at most {args.time_limit:.0f} s ...",
          file=sys.stderr)
    torch.manual_seed(args.seed)
    result = train(task, model, tcfg, out)
    finalize_weights(out, model)
    translator = Translator(model.eval(), src_tok, tgt_tok, cfg.max_len, meta)
    hyps = translator.translate(test.src)
    correct = sum(h == r for h, r in zip(hyps, test.tgt, strict=True))
    accuracy = 100.0 * correct / len(test)
    print("\nsample translations (held-out dates):")
    for s, h, r in list(zip(test.src, hyps, test.tgt, strict=True))[:8]:
        print(f"  {s:<60} -> {h}  {'ok' if h == r else 'expected ' + r}")
    spelled = next((s for s in test.src if not any(c.isdigit() for c in s)), test.src[0])  # words only
    png = _attention_png(translator, spelled, out / "attention.png")
    print(f"\nheld-out exact match: {accuracy:.1f}% ({correct}/{len(test)}) after {result.step} steps; "
          f"total time {time.monotonic() - started:.0f} s")
    print(f"encoder-decoder attention: {png}")
    print(f"translate more: echo 'the fifth of May, nineteen eighty-four' | attnkit translate run {out}")
    return 0


@torch.no_grad()
def _attention_png(translator: Translator, sentence: str, path: Path) -> Path:
    """Greedy-translate ``sentence``, then plot the last decoder layer's cross-attention (mean over heads)."""
    model = translator.model
    src_ids = translator.encode_sources([sentence])[0]
    out_ids = translator.translate_ids([src_ids])[0]
    src = torch.tensor([src_ids])
    tgt_in = torch.tensor([[BOS_ID] + out_ids])
    memory = model.encode(src)
    dec = model.decode(tgt_in, memory, model.source_mask(src), need_weights=True)
    weights = dec.cross_weights[-1][0].mean(0)  # (T, S): last layer, averaged over heads
    src_tokens = translator.src_tok.tokens(src_ids)
    tgt_tokens = translator.tgt_tok.tokens(out_ids) + ["</s>"]
    weights = weights[: len(tgt_tokens)]  # row t: the step that predicts target token t
    text = translator.tgt_tok.decode(out_ids)
    return plot_attention(weights, src_tokens, tgt_tokens, path, f"{sentence!r} -> {text!r}")
