"""`attnkit translate train | run | eval`: translation with an encoder-decoder on parallel text.

    attnkit translate train --data DIR --src de --tgt en --preset small --out RUN   (resumes when RUN has
                                                                                     a checkpoint)
    attnkit translate run RUN [--beam 5] < in.txt > out.txt    one output line per input line
    attnkit translate eval RUN --data DIR --split test_2016_flickr [--beam 1 5]
    (run and eval: --dtype auto|fp32|bf16|int8, the inference precision; docs/speed.md)

Input lines longer than the model's maximum length are truncated, with a warning on stderr. Input that is
not UTF-8, a missing or corrupt run directory, or a run of another model family: one-line error, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from attnkit.cli.common import add_dtype_arg, dtype_note
from attnkit.cli.stream import Interruptible, LineWriter, progress_bar
from attnkit.data.lines import decode_lines
from attnkit.data.parallel import read_parallel, resolve_data
from attnkit.decoding.align import DEFAULT_LAYER, format_pharaoh
from attnkit.decoding.options import DecodeOptions
from attnkit.errors import InputError
from attnkit.evaluation.bleu import corpus_scores
from attnkit.models.hf.hub import download
from attnkit.models.params import num_parameters
from attnkit.models.rnn import CELLS as RNN_CELLS
from attnkit.models.rnn import SCORES as RNN_SCORES
from attnkit.models.rnn import RNNSeq2SeqConfig
from attnkit.models.transformer import PRESETS, TransformerConfig
from attnkit.tasks import limits
from attnkit.tasks.pretrained_translation import export_marian, open_translation
from attnkit.tasks.translation import (
    ARCHS,
    Translator,
    check_run_family,
    check_training_memory,
    corpus_task,
    finalize_weights,
    run_meta,
    run_tokenizers,
)
from attnkit.tasks.translation import build_model as build_translation_model
from attnkit.training import TrainConfig, add_train_args, train, train_config_from_args

# translate run decodes its input in chunks of this many batches (each chunk sorted by length), so that
# the first lines are written early (the translations do not depend on the batching; tested).
CHUNK_BATCHES = 2
# The Python names of the decoding options (errors of attnkit.tasks.limits) -> the flags.
RUN_OPTIONS = {"beam_size": "--beam", "max_tokens": "--batch-tokens"}
DECODE_FLAGS = {"beam_size": "--beam", "n_best": "--n-best", "temperature": "--temperature", "top_k": "--top-k",
                "top_p": "--top-p", "no_repeat_ngram": "--no-repeat-ngram", "max_len_a": "--max-len-a",
                "max_len_b": "--max-len-b", "length_penalty": "--length-penalty",
                "early_stopping": "--early-stopping"}
TRAIN_OPTIONS = {"vocab_size": "--vocab-size", "max_tokens": "--max-tokens", "d_model": "--d-model", "d_ff": "--d-ff",
                 "n_layers": "--layers", "max_len": "--max-len", "grad_accum": "--grad-accum"}
TRAIN_DEFAULTS = TrainConfig(max_steps=100000, lr=1e-3, warmup=1000, schedule="inverse_sqrt", clip_norm=1.0,
                             eval_every=500, ckpt_every=500, keep_last=5, log_every=50)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="train, run and evaluate a translation model")
    tsub = p.add_subparsers(dest="translate_command", metavar="ACTION")
    tsub.required = True

    t = tsub.add_parser("train", help="train on a parallel corpus (resumes when --out holds a checkpoint)")
    t.add_argument("--data", required=True, help="corpus directory with {split}.{lang}[.gz], or 'multi30k'")
    t.add_argument("--src", default="de", help="source language (default %(default)s)")
    t.add_argument("--tgt", default="en", help="target language (default %(default)s)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--arch", choices=ARCHS, default="transformer")
    t.add_argument("--preset", choices=PRESETS, default="small", help="model size (default %(default)s)")
    t.add_argument("--score", choices=RNN_SCORES, default="additive", help="--arch rnn: attention scoring")
    t.add_argument("--cell", choices=RNN_CELLS, default="gru", help="--arch rnn: recurrent cell")
    t.add_argument("--d-model", type=int, help="override the preset's d_model")
    t.add_argument("--heads", type=int, help="override the number of heads")
    t.add_argument("--d-ff", type=int, help="override the FFN width")
    t.add_argument("--layers", type=int, help="override encoder and decoder depth")
    t.add_argument("--dropout", type=float, help="override the preset's dropout")
    t.add_argument("--attn-dropout", type=float,
                   help="dropout on attention weights (default: --dropout; Marian's default is 0)")
    t.add_argument("--activation-dropout", type=float,
                   help="dropout inside the FFN, after the activation (default: --dropout; Marian's default is 0)")
    t.add_argument("--pre-norm", action="store_true", help="pre-norm layers (default: post-norm, the paper's)")
    t.add_argument("--positions", choices=("sinusoidal", "learned"), default="sinusoidal")
    t.add_argument("--max-len", type=int, default=256, help="longest source/target in subword tokens")
    t.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary size (default %(default)s)")
    t.add_argument("--separate-vocab", action="store_true", help="one BPE per language (no tied embeddings)")
    t.add_argument("--max-tokens", type=int, default=4096, help="tokens per micro-batch (default %(default)s)")
    t.add_argument("--label-smoothing", type=float, default=0.1)
    t.add_argument("--bpe-dropout", type=float,
                   help="BPE-dropout: each epoch resegments the training pairs with every merge skipped with this "
                        "probability (default 0: off; 0.1 in the paper; a resumed run keeps its own)")
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default="val")
    t.add_argument("--val-bleu-n", type=int, default=300, help="validation sentences decoded for BLEU")
    t.add_argument("--max-train-lines", type=int, help="use only the first N training pairs")
    t.add_argument("--average-last", type=int, default=1, help="average the last N checkpoints at the end")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    add_train_args(t, TRAIN_DEFAULTS)
    t.set_defaults(func=cmd_train)

    r = tsub.add_parser("run", help="translate stdin to stdout, one line per line")
    _model_args(r)
    _decode_args(r)
    r.set_defaults(func=cmd_run)

    e = tsub.add_parser("eval", help="BLEU and chrF of a run on a corpus split")
    _model_args(e)
    e.add_argument("--data", required=True, help="corpus directory or 'multi30k'")
    e.add_argument("--src", help="the corpus' source language suffix (default: the run's)")
    e.add_argument("--tgt", help="the corpus' target language suffix (default: the run's)")
    e.add_argument("--split", default="test_2016_flickr")
    e.add_argument("--beam", type=int, nargs="+", default=[1, 5], help="beam sizes to score (1 = greedy)")
    e.add_argument("--length-penalty", type=float, default=1.0)
    e.add_argument("--json", help="also write the scores to this JSON file")
    e.add_argument("--hyp-out", help="write the translations of the last beam size here")
    e.set_defaults(func=cmd_eval)

    x = tsub.add_parser("export", help="write a run in another format (a Hugging Face Marian directory)")
    x.add_argument("run_dir")
    x.add_argument("out", help="the directory to write")
    x.add_argument("--format", choices=("hf",), default="hf", help="hf: a MarianMTModel directory (default)")
    x.set_defaults(func=cmd_export)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", help="an attnkit run, or a Hugging Face Marian / M2M-100 / NLLB directory")
    p.add_argument("--hf", metavar="NAME", help="a Hugging Face Hub model (e.g. Helsinki-NLP/opus-mt-de-en), "
                   "downloaded once into the Hub cache, or a local directory")
    p.add_argument("--src-lang", help="source language code of a multilingual model (M2M-100: de, NLLB: deu_Latn)")
    p.add_argument("--tgt-lang", help="target language code (M2M-100 / NLLB: the forced first token; a "
                   "multi-target Marian model: its >>xx<< token)")
    add_dtype_arg(p)


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy, default)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="alpha of score / length**alpha")
    p.add_argument("--batch-tokens", type=int, default=3000,
                   help="source tokens per batch, times the beam size (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.add_argument("--compile", action="store_true",
                   help="compile the one-token decoding step (torch.compile; Transformer models; faster on large "
                        "inputs after a first compile of tens of seconds per batch shape)")
    d = p.add_argument_group("decoding options (every encoder-decoder)")
    d.add_argument("--n-best", type=int, help="print the K best hypotheses of the beam (K <= --beam) as TSV: "
                   "line index, rank, score, text")
    d.add_argument("--sample", action="store_true", help="sample instead of searching (e.g. back-translation)")
    d.add_argument("--temperature", type=float, default=1.0, help="--sample: softmax temperature")
    d.add_argument("--top-k", type=int, help="--sample: only the K most likely tokens")
    d.add_argument("--top-p", type=float, help="--sample: only the smallest set of tokens of probability >= P")
    d.add_argument("--seed", type=int, help="--sample: random seed (the same output every run)")
    d.add_argument("--no-repeat-ngram", type=int, default=0, help="no N-gram twice in a translation (0 = off)")
    d.add_argument("--max-len-a", type=float, default=1.0, help="at most A * source length + B new tokens")
    d.add_argument("--max-len-b", type=int, default=50, help="(see --max-len-a; default 1 * length + 50)")
    d.add_argument("--early-stopping", choices=("true", "false", "never"), default="true",
                   help="beam search: true (default): a line is done with K finished hypotheses; false / never: "
                   "transformers' generate rules (also stop when the best live one can no longer win)")
    d.add_argument("--prefix", help="forced first words of every translation (target-side text)")
    d.add_argument("--alignments", action="store_true", help="append a tab and the word alignment (Pharaoh "
                   "i-j pairs: source word i, target word j) to each line")
    d.add_argument("--align-layer", type=int, default=DEFAULT_LAYER, help="decoder layer whose cross-attention "
                   "aligns (default -2: the second-to-last)")
    d.add_argument("--align-heads", type=int, nargs="+", help="heads to average (default: all)")


def _decode_options(args: argparse.Namespace, translator: Translator) -> DecodeOptions:
    """The DecodeOptions of the flags; InputError naming the flag for a bad value."""
    if args.n_best is not None and args.sample:
        raise InputError("--n-best ranks the hypotheses of a beam; it does not combine with --sample")
    if args.sample and args.beam > 1:
        raise InputError("--sample draws one translation per line; it does not combine with --beam > 1")
    prefix = translator.target_ids(args.prefix) if args.prefix else ()
    try:
        return DecodeOptions(beam_size=args.beam, length_penalty=args.length_penalty, n_best=args.n_best or 1,
                             sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                             seed=args.seed, no_repeat_ngram=args.no_repeat_ngram, max_len_a=args.max_len_a,
                             max_len_b=args.max_len_b, prefix=prefix,
                             early_stopping={"true": True, "false": False}.get(args.early_stopping, "never"),
                             compile=args.compile)
    except ValueError as exc:  # "<field> must be ...": name the flag
        name, rest = str(exc).split(" ", 1)
        raise InputError(f"{DECODE_FLAGS.get(name, name)} {rest}") from None


def _run_listing(args: argparse.Namespace, translator: Translator, lines: list[str], opts: DecodeOptions) -> int:
    """--n-best (TSV: line index, rank, score, text) and --alignments (text TAB pairs), after all lines."""
    langs = {"src_lang": args.src_lang, "tgt_lang": args.tgt_lang}
    if args.n_best is not None:
        hyps: list = []
        translator.translate(lines, warn=True, max_tokens=args.batch_tokens, options=opts, nbest=hyps, **langs)
        for n, sent in enumerate(hyps):
            for rank, (score, text) in enumerate(sent, 1):
                sys.stdout.write(f"{n}\t{rank}\t{score:.4f}\t{text.replace(chr(10), ' ')}\n")
    else:
        try:
            aligned = translator.align(lines, opts, args.align_layer, args.align_heads, **langs)
        except ValueError as exc:
            raise InputError(f"--align-layer / --align-heads: {exc}") from None
        for a in aligned:
            sys.stdout.write(f"{a.text.replace(chr(10), ' ')}\t{format_pharaoh(a.pairs)}\n")
    sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------------------------- train
def _model_config(args: argparse.Namespace, src_vocab: int, tgt_vocab: int) -> dict:
    if args.arch == "rnn":
        return _rnn_config(args, src_vocab, tgt_vocab)
    over = {k: v for k, v in {"d_model": args.d_model, "n_heads": args.heads, "d_ff": args.d_ff,
                              "n_encoder_layers": args.layers, "n_decoder_layers": args.layers,
                              "dropout": args.dropout, "attn_dropout": args.attn_dropout,
                              "activation_dropout": args.activation_dropout}.items() if v is not None}
    try:
        cfg = TransformerConfig.preset(args.preset, src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab,
                                       norm_first=args.pre_norm, positions=args.positions, max_len=args.max_len,
                                       share_embeddings=not args.separate_vocab,
                                       tie_output=True, **over)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return cfg.to_dict()


def _rnn_config(args: argparse.Namespace, src_vocab: int, tgt_vocab: int) -> dict:
    for flag, value in (("--attn-dropout", args.attn_dropout), ("--activation-dropout", args.activation_dropout)):
        if value is not None:
            raise InputError(f"{flag} is an option of --arch transformer (the RNN has no attention or FFN)")
    over = {k: v for k, v in {"d_emb": args.d_model, "d_hidden": args.d_model, "n_layers": args.layers,
                              "dropout": args.dropout}.items() if v is not None}
    try:
        cfg = RNNSeq2SeqConfig.preset("base" if args.preset in ("base", "big") else args.preset,
                                      src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, score=args.score,
                                      cell=args.cell, **over)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return {**cfg.to_dict(), "max_len": args.max_len}


def _check_train_args(args: argparse.Namespace) -> None:
    """InputError for out-of-range flags (they would fail deep inside the model or the loss)."""
    checks = [("--max-tokens", args.max_tokens, args.max_tokens >= 1, ">= 1"),
              ("--max-len", args.max_len, args.max_len >= 2, ">= 2"),
              ("--label-smoothing", args.label_smoothing, 0.0 <= args.label_smoothing < 1.0, "in [0, 1)"),
              ("--val-bleu-n", args.val_bleu_n, args.val_bleu_n >= 0, ">= 0")]
    checks += [(flag, v, v >= 1, ">= 1") for flag, v in (("--d-model", args.d_model), ("--heads", args.heads),
                                                         ("--d-ff", args.d_ff), ("--layers", args.layers),
                                                         ("--max-train-lines", args.max_train_lines),
                                                         ("--average-last", args.average_last)) if v is not None]
    for flag, value in (("--dropout", args.dropout), ("--attn-dropout", args.attn_dropout),
                        ("--activation-dropout", args.activation_dropout), ("--bpe-dropout", args.bpe_dropout)):
        if value is not None:
            checks.append((flag, value, 0.0 <= value < 1.0, "in [0, 1)"))
    for flag, value, ok, rule in checks:
        if not ok:
            raise InputError(f"{flag} must be {rule}, got {value}")


def _bpe_dropout(args: argparse.Namespace, meta: dict) -> float:
    """The run's BPE-dropout: what run.json holds (written at the start; runs older than the flag: 0). A
    resumed run keeps it, since its earlier epochs' samples were drawn with it."""
    rate = float(meta.get("bpe_dropout", 0.0))
    if args.bpe_dropout is not None and args.bpe_dropout != rate:
        raise InputError(f"--bpe-dropout {args.bpe_dropout}: {args.out} was started with {rate} "
                         "(a resumed run keeps its BPE-dropout; use another --out for a new run)")
    if rate and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("--bpe-dropout runs in one process only: under torchrun each process would draw its "
                         "own segmentation of an epoch")
    return rate


@limits.with_option_names(TRAIN_OPTIONS)
def cmd_train(args: argparse.Namespace) -> int:
    _check_train_args(args)
    threads = limits.threads("--threads", args.threads)
    if threads:
        torch.set_num_threads(threads)
    out = Path(args.out)
    check_run_family(out)
    data = resolve_data(args.data, (args.src, args.tgt))
    corpus = read_parallel(data, args.train_split, args.src, args.tgt)
    if args.max_train_lines:
        corpus.src, corpus.tgt = corpus.src[: args.max_train_lines], corpus.tgt[: args.max_train_lines]
    if len(corpus) == 0:
        raise InputError(f"{data}: the {args.train_split} split is empty")
    try:
        val = read_parallel(data, args.val_split, args.src, args.tgt)
    except InputError:
        val = None
    joint = not args.separate_vocab
    src_tok, tgt_tok = run_tokenizers(out, args.src, args.tgt, joint, args.vocab_size, corpus.src, corpus.tgt)
    meta = run_meta(out, lambda: {"arch": args.arch, "src": args.src, "tgt": args.tgt, "joint": joint,
                                  "model_config": _model_config(args, src_tok.vocab_size, tgt_tok.vocab_size),
                                  "bpe_dropout": args.bpe_dropout or 0.0})
    bpe_dropout = _bpe_dropout(args, meta)
    cfg = train_config_from_args(args, max_tokens=args.max_tokens, vocab_size=args.vocab_size,
                                 label_smoothing=args.label_smoothing)
    check_training_memory(meta, len(corpus), args.max_tokens, cfg.grad_accum, cfg.device)
    model = build_translation_model(meta["arch"], meta["model_config"])
    task = corpus_task(corpus.src, corpus.tgt, val.src if val else [], val.tgt if val else [], meta, src_tok,
                       tgt_tok, args.max_tokens, cfg.seed, args.label_smoothing, args.val_bleu_n,
                       bpe_dropout=bpe_dropout, run_dir=out)
    print(f"attnkit: {meta['arch']} with {num_parameters(model) / 1e6:.2f}M parameters, {len(corpus)} training "
          f"pairs, vocabulary {src_tok.vocab_size}/{tgt_tok.vocab_size}", file=sys.stderr)
    result = train(task, model, cfg, out)
    n = finalize_weights(out, model, args.average_last)
    print(f"attnkit: stopped at step {result.step} ({result.stop_reason}); {out / 'model.safetensors'} = "
          f"{'average of the last ' + str(n) + ' checkpoints' if n > 1 else 'final weights'}", file=sys.stderr)
    if result.eval:
        print(json.dumps(result.eval), file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------ run / eval
def cmd_run(args: argparse.Namespace) -> int:
    """Translate stdin, writing each line as soon as it and the lines before it are done (the input is
    decoded in chunks of CHUNK_BATCHES batches, each sorted by length); Ctrl-C / SIGTERM: exit 130 / 143
    after whole lines, with one line saying how many."""
    if args.beam < 1:
        raise InputError(f"--beam must be >= 1, got {args.beam}")
    limits.finite("--length-penalty", args.length_penalty)
    translator = _translator(args)
    translator.languages(args.src_lang, args.tgt_lang)  # a bad language code fails before reading stdin
    opts = _decode_options(args, translator)
    lines = decode_lines(sys.stdin.buffer.read(), "standard input")
    if args.n_best is not None or args.alignments:
        with limits.option_names(RUN_OPTIONS):
            return _run_listing(args, translator, lines, opts)
    bar = progress_bar(len(lines), "line", args.quiet)
    guard = Interruptible(lambda: writer.progress())
    writer = LineWriter(sys.stdout, len(lines), guard, bar)
    with bar, guard, limits.option_names(RUN_OPTIONS):
        chunk = CHUNK_BATCHES * max(args.batch_tokens // max(args.beam, 1), 1)
        translator.translate(lines, beam_size=args.beam, length_penalty=args.length_penalty, warn=True,
                             src_lang=args.src_lang, tgt_lang=args.tgt_lang, max_tokens=args.batch_tokens,
                             chunk_tokens=chunk, options=opts,
                             on_done=lambda _, out: writer.write([line.replace("\n", " ") for line in out]))
    return 0


@limits.with_option_names(RUN_OPTIONS)
def cmd_eval(args: argparse.Namespace) -> int:
    if any(b < 1 for b in args.beam):
        raise InputError(f"--beam sizes must be >= 1, got {args.beam}")
    limits.finite("--length-penalty", args.length_penalty)
    translator = _translator(args)
    translator.languages(args.src_lang, args.tgt_lang)
    meta = {**translator.meta, **{k: v for k, v in (("src", args.src), ("tgt", args.tgt)) if v}}
    if "src" not in meta or "tgt" not in meta:
        raise InputError("--src and --tgt are needed: the model does not say which corpus files to read")
    corpus = read_parallel(resolve_data(args.data, (meta["src"], meta["tgt"])), args.split, meta["src"], meta["tgt"])
    if len(corpus) == 0:
        raise InputError(f"{args.data}: the {args.split} split is empty")
    results = {"run": str(args.run_dir or args.hf), "split": args.split, "src": meta["src"], "tgt": meta["tgt"],
               "sentences": len(corpus), "length_penalty": args.length_penalty, "scores": {}}
    hyps: list[str] = []
    for beam in args.beam:
        start = time.perf_counter()
        hyps = translator.translate(corpus.src, beam_size=beam, length_penalty=args.length_penalty, warn=True,
                                    src_lang=args.src_lang, tgt_lang=args.tgt_lang)
        seconds = time.perf_counter() - start
        s = corpus_scores(hyps, corpus.tgt)
        name = "greedy" if beam == 1 else f"beam{beam}"
        results["scores"][name] = {**s.to_dict(), "seconds": seconds, "sentences_per_s": len(corpus) / seconds}
        print(f"{args.split} {meta['src']}->{meta['tgt']} {name:>7}: BLEU {s.bleu:.2f}  chrF {s.chrf:.2f}  "
              f"({len(corpus) / seconds:.1f} sentences/s)")
    print(f"sacreBLEU signature: {results['scores'][name]['signature']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.hyp_out:
        Path(args.hyp_out).write_text("".join(h + "\n" for h in hyps))
    return 0


def _translator(args: argparse.Namespace) -> Translator:
    if (args.run_dir is None) == (args.hf is None):
        raise InputError("give either a run directory or --hf NAME")
    run = open_translation(args.run_dir if args.hf is None else download(args.hf), args.dtype)
    dtype_note(run, args.dtype)
    return run.inference


def cmd_export(args: argparse.Namespace) -> int:
    out = export_marian(args.run_dir, args.out)
    print(f"attnkit: wrote {out} (a MarianMTModel directory; transformers: AutoModelForSeq2SeqLM / AutoTokenizer)",
          file=sys.stderr)
    return 0
