"""`attnkit lm train | sample | eval`: a GPT language model on plain text.

    attnkit lm train --text FILE --tokenizer char|bpe --preset shakespeare-char --out RUN   (resumes when RUN
                                                                                            has a checkpoint)
    attnkit lm train --text FILE --init DIR --out RUN [--block-size N]       fine-tune a run or HF directory
    attnkit lm sample RUN | --hf DIR --prompt TEXT [--max-new-tokens N --temperature T --top-k K --top-p P
                                                    --seed S --num-samples N]
    attnkit lm sample DIR --chat --prompt TEXT | --message ROLE:TEXT ... | --messages FILE   (chat template)
    attnkit lm eval RUN | --hf DIR --text FILE [--split all|train|val]     loss (nats/token) and perplexity
    (sample and eval: --dtype auto|fp32|bf16|int8, the inference precision; docs/speed.md)

The task, the generator and the run format are :mod:`attnkit.tasks.lm` (an empty prompt starts from the
end-of-text token or a newline; generation goes on in windows past the context).
Errors the user can fix (empty or non-UTF-8 text, a prompt with characters the tokenizer lacks or longer
than the context, a missing or corrupt run) are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from attnkit.cli.chat import add_chat_args, read_messages
from attnkit.cli.common import add_dtype_arg, dtype_note
from attnkit.cli.stream import Interruptible, SampleWriter, Stopped
from attnkit.cli.textarg import utf8_text
from attnkit.errors import InputError
from attnkit.models.gpt import GPT, PRESETS
from attnkit.models.hf.llama import MODEL_TYPES as LLAMA_TYPES
from attnkit.tasks import limits
from attnkit.tasks.lm import FAMILY, Generator, build_task, check_training_memory
from attnkit.tasks.runs import HF_CONFIG_FILE, Run, open_run
from attnkit.training import TrainConfig, add_train_args, train, train_config_from_args
from attnkit.training.checkpoint import RUN_FILE, read_meta_file
from attnkit.training.optim import fused_adamw

# The Python names of lm sample's options (in errors of attnkit.tasks.limits) -> its flags.
SAMPLE_OPTIONS = {"max_new_tokens": "--max-new-tokens", "num_samples": "--num-samples", "seed": "--seed",
                  "top_k": "--top-k", "top_p": "--top-p", "temperature": "--temperature"}
TRAIN_OPTIONS = {"bpe_vocab": "--bpe-vocab", "batch_size": "--batch-size", "max_len": "--max-len",
                 "d_model": "--d-model", "n_layers": "--n-layers", "vocab_size": "--bpe-vocab",
                 "grad_accum": "--grad-accum"}
HF_LM_TYPES = ("gpt2", *LLAMA_TYPES)  # the Hugging Face model types `lm sample --hf` opens
# nanoGPT's shakespeare-char recipe: AdamW(0.9, 0.99), wd 0.1, warm-up 100, cosine to 1e-4, clip 1.
TRAIN_DEFAULTS = TrainConfig(max_steps=2000, lr=1e-3, warmup=100, schedule="cosine", min_lr=1e-4,
                             weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8, clip_norm=1.0, eval_every=500,
                             ckpt_every=500, keep_last=2, log_every=10)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lm", help="train, sample and evaluate a GPT language model")
    lsub = p.add_subparsers(dest="lm_command", metavar="ACTION")
    lsub.required = True

    t = lsub.add_parser("train", help="train on a text file (resumes when --out holds a checkpoint)")
    t.add_argument("--text", required=True, help="UTF-8 text file")
    t.add_argument("--tokenizer", choices=("char", "bpe"), default="char")
    t.add_argument("--bpe-vocab", type=int, default=1024, help="byte-level BPE vocabulary size")
    t.add_argument("--preset", choices=sorted(PRESETS), default="shakespeare-char")
    t.add_argument("--init", metavar="DIR", help="fine-tune this GPT run or Hugging Face GPT-2 / Llama / Qwen2 / "
                   "Mistral directory (its tokenizer, config and weights; --block-size: the training length)")
    t.add_argument("--out", required=True, help="run directory")
    # The sizes' names are the configs' (d_model, n_heads, ...); the GPT-2 spellings stay as aliases.
    t.add_argument("--max-len", "--block-size", dest="max_len", type=int, help="override the preset's context length")
    t.add_argument("--n-layers", "--n-layer", dest="n_layers", type=int)
    t.add_argument("--n-heads", "--n-head", dest="n_heads", type=int)
    t.add_argument("--d-model", "--n-embd", dest="d_model", type=int)
    t.add_argument("--n-kv-heads", type=int, help="key/value heads (grouped-query attention; default: n_heads)")
    t.add_argument("--window", type=int, help="sliding-window attention over the last N tokens")
    t.add_argument("--dropout", type=float)
    t.add_argument("--bias", choices=("yes", "no"), help="biases in linears and LayerNorms")
    t.add_argument("--batch-size", type=int, default=12, help="blocks per micro-batch (default %(default)s)")
    t.add_argument("--val-fraction", type=float, default=0.1, help="tail of the text kept for validation")
    t.add_argument("--eval-batches", type=int, help="limit validation to N batches (default: all)")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    add_train_args(t, TRAIN_DEFAULTS)
    t.set_defaults(func=cmd_train)

    s = lsub.add_parser("sample", help="continue a prompt")
    _model_source(s)
    s.add_argument("--prompt", default="", type=utf8_text, help="text to continue (default: empty)")
    s.add_argument("--max-new-tokens", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default %(default)s)")
    s.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    s.add_argument("--top-p", type=float, help="sample from the smallest set of mass >= p")
    s.add_argument("--seed", type=int, help="for reproducible samples")
    s.add_argument("--num-samples", type=int, default=1)
    s.add_argument("--compile", action="store_true",
                   help="compile the one-token decoding step (torch.compile: faster for long outputs after a first "
                        "compile of tens of seconds; the same tokens)")
    add_chat_args(s)
    s.set_defaults(func=cmd_sample)

    e = lsub.add_parser("eval", help="loss and perplexity on a text file")
    _model_source(e)
    e.add_argument("--text", required=True, help="UTF-8 text file")
    e.add_argument("--split", choices=("all", "train", "val"), default="all", help="which part of the text")
    e.add_argument("--val-fraction", type=float, default=0.1)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_eval)


def _model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", help="run directory of `attnkit lm train`")
    p.add_argument("--hf", help="a Hugging Face GPT-2, Llama, Qwen2 or Mistral directory instead of a run")
    p.add_argument("--device", default="cpu")
    add_dtype_arg(p)


# ---------------------------------------------------------------------------------------------- train
def _overrides(args: argparse.Namespace) -> dict:
    over = {"max_len": args.max_len, "n_layers": args.n_layers, "n_heads": args.n_heads,
            "d_model": args.d_model, "dropout": args.dropout, "n_kv_heads": args.n_kv_heads, "window": args.window}
    over = {k: v for k, v in over.items() if v is not None}
    if args.bias is not None:
        over["bias"] = args.bias == "yes"
    return over


@limits.with_option_names(TRAIN_OPTIONS)
def cmd_train(args: argparse.Namespace) -> int:
    threads = limits.threads("--threads", args.threads)
    if threads:
        torch.set_num_threads(threads)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.eval_batches is not None and args.eval_batches < 1:
        raise InputError(f"--eval-batches must be >= 1, got {args.eval_batches}")
    init = open_lm(Path(args.init), hf=False) if args.init else None
    task, resumed = build_task(Path(args.out), args.text, args.tokenizer, args.bpe_vocab, args.preset,
                               _overrides(args), args.batch_size, args.val_fraction, args.seed, args.eval_batches,
                               init=init)
    if resumed is not None:
        print(f"attnkit: resuming {args.out} from step {resumed} (the text and model flags of the run "
              f"are kept; batch size {task.batch_size})", file=sys.stderr)
    cfg = train_config_from_args(args, batch_size=task.batch_size, text=str(args.text),
                                 **({"init": str(args.init)} if args.init else {}))
    torch.manual_seed(cfg.seed)
    check_training_memory(task, cfg.grad_accum, cfg.device)
    model = GPT(task.config)
    if init is not None and resumed is None:
        model.load_state_dict(init.model.state_dict())
    result = train(task, model, cfg, args.out, optimizer_factory=fused_adamw)
    summary = {"step": result.step, "stop": result.stop_reason, **result.eval}
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------ sample and eval
def load_lm(args: argparse.Namespace) -> Run:
    """The run of ``run_dir`` or ``--hf`` (its model on ``--device`` in ``--dtype``, eval mode)."""
    if (args.run_dir is None) == (args.hf is None):
        raise InputError("give either a run directory or --hf DIR")
    run = open_lm(Path(args.hf or args.run_dir), hf=args.hf is not None, dtype=args.dtype, device=args.device)
    dtype_note(run, args.dtype)
    return run


def open_lm(path: Path, hf: bool, dtype: str = "fp32", device: str = "cpu") -> Run:
    """A GPT run, or (``hf``, or a directory with a config.json and no run.json) a Hugging Face GPT-2 /
    Llama / Qwen2 / Mistral directory (any other model_type is opened as GPT-2, whose loader names it)."""
    if hf or (not (path / RUN_FILE).is_file() and (path / HF_CONFIG_FILE).is_file()):
        config = path / HF_CONFIG_FILE
        model_type = read_meta_file(config).get("model_type") if config.is_file() else None
        return open_run(path, model_type=model_type if model_type in HF_LM_TYPES else "gpt2", dtype=dtype,
                        device=device)
    return open_run(path, family=FAMILY, dtype=dtype, device=device)


def cmd_sample(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 0 or args.num_samples < 1:
        raise InputError("--max-new-tokens must be >= 0 and --num-samples >= 1")
    if math.isnan(args.temperature):
        raise InputError("--temperature must be a number >= 0, got nan")
    if args.seed is not None and not -(2**63) <= args.seed < 2**63:
        raise InputError(f"--seed must fit in 64 bits, got {args.seed}")
    messages = read_messages(args)
    run = load_lm(args)
    generator: Generator = run.inference
    options = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, num_samples=args.num_samples, compile=args.compile)
    if messages is not None:
        if not run.can("chat"):
            raise InputError(f"{run.path}: this model has no chat template (Llama / Qwen2 / Mistral directories do)")
        prompt, shown = run.inference.chat_ids(messages), ""
    else:
        prompt, shown = args.prompt, args.prompt
    with limits.option_names(SAMPLE_OPTIONS):
        return _print_samples(generator, prompt, shown, options)


def _print_samples(generator: Generator, prompt: str | list[int], shown: str, options: dict) -> int:
    """The samples printed as they are generated, one after another (``shown`` + text of each, separated
    as before); Ctrl-C / SIGTERM end the sample line being printed, then stop (exit 130 / 143)."""
    n, m = options["num_samples"], options["max_new_tokens"]
    limits.check_memory(limits.token_buffer_bytes(n - 1, m), "the samples waiting to be printed",
                        [limits.Option("num_samples", n), limits.Option("max_new_tokens", m, 200)])
    guard = Interruptible(lambda: writer.progress())
    writer = SampleWriter(sys.stdout, shown, n, guard)
    try:
        with guard:
            generator.stream(writer, prompt, **options)
    except Stopped:
        writer.close_line()
        raise
    return 0


@limits.with_option_names({"batch_size": "--batch-size"})
def cmd_eval(args: argparse.Namespace) -> int:
    generator: Generator = load_lm(args).inference
    ev = generator.evaluate(args.text, args.split, args.val_fraction, args.batch_size)
    if args.json:
        print(json.dumps(ev._asdict()))
    else:
        print(f"loss {ev.loss:.4f}  perplexity {ev.perplexity:.3f}  tokens {ev.tokens}")
    return 0
