"""`attnkit lm train | sample | eval`: a GPT language model on plain text.

    attnkit lm train --text FILE --tokenizer char|bpe --preset shakespeare-char --out RUN   (resumes when RUN
                                                                                            has a checkpoint)
    attnkit lm sample RUN | --hf DIR --prompt TEXT [--max-new-tokens N --temperature T --top-k K --top-p P
                                                    --seed S --num-samples N]
    attnkit lm eval RUN | --hf DIR --text FILE [--split all|train|val]     loss (nats/token) and perplexity

Documented behaviours: an empty prompt starts from the end-of-text token (GPT-2) or a newline (characters);
generation longer than the model's context goes on in windows (the last half of the context is fed again,
see :func:`attnkit.decoding.generate.generate_text`).
Errors the user can fix (empty or non-UTF-8 text, a prompt with characters the tokenizer lacks or longer
than the context, a missing or corrupt run) are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnkit.cli.textarg import utf8_text
from attnkit.data.text import RandomBlocks, load_ids, read_text, save_ids, split_ids, to_array
from attnkit.decoding.generate import GenerationConfig, generate_text
from attnkit.errors import CheckpointError, InputError
from attnkit.evaluation.perplexity import evaluate_lm, lm_loss_sum
from attnkit.models.gpt import CONFIG_FILE, GPT, PRESETS, GPTConfig
from attnkit.tokenizers.bytebpe import train_bytebpe
from attnkit.tokenizers.char import TextTokenizer, train_char_tokenizer
from attnkit.training import TrainConfig, add_train_args, train, train_config_from_args
from attnkit.training.checkpoint import RUN_FILE, latest_checkpoint, load_model_weights, read_meta
from attnkit.training.optim import param_groups

FAMILY = "gpt"
TRAIN_IDS, VAL_IDS = "data/train.npy", "data/val.npy"
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
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--block-size", type=int, help="override the preset's context length")
    t.add_argument("--n-layer", type=int)
    t.add_argument("--n-head", type=int)
    t.add_argument("--n-embd", type=int)
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
    p.add_argument("--hf", help="a Hugging Face GPT-2 directory instead of a run")
    p.add_argument("--device", default="cpu")


# ---------------------------------------------------------------------------------------------- train
@dataclass
class LMTask:
    """The language-modelling task given to :func:`attnkit.training.train` (see its TrainTask)."""

    train_ids: np.ndarray
    val_ids: np.ndarray
    config: GPTConfig
    tokenizer: TextTokenizer
    batch_size: int
    seed: int = 0
    eval_batches: int | None = None
    family: str = FAMILY

    def batches(self, epoch: int) -> RandomBlocks:
        return RandomBlocks(self.train_ids, self.config.block_size, self.batch_size, self.seed, epoch)

    def count(self, batch) -> int:  # noqa: ANN001
        return batch.y.numel()

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:  # noqa: ANN001
        return lm_loss_sum(model, batch.x, batch.y)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        if len(self.val_ids) < 2:
            return {}
        ev = evaluate_lm(model, self.val_ids, self.config.block_size, 64, max_batches=self.eval_batches)
        return {"val_loss": ev.loss, "val_ppl": ev.perplexity}

    def metadata(self) -> dict:
        return {"model_config": self.config.to_dict(), "tokenizer": self.tokenizer.kind}

    def save_extra(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir)
        self.config.save(run_dir / CONFIG_FILE)
        (run_dir / "data").mkdir(exist_ok=True)
        save_ids(run_dir / TRAIN_IDS, self.train_ids)
        save_ids(run_dir / VAL_IDS, self.val_ids)


def fused_adamw(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The training loop's AdamW (decay on >= 2-D weights only) with PyTorch's fused kernel: one call per
    step instead of a dozen small ops per parameter (the same update, about 10% of a CPU step saved)."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             fused=True)


def _fresh_config(args: argparse.Namespace, vocab_size: int) -> GPTConfig:
    over = {"block_size": args.block_size, "n_layer": args.n_layer, "n_head": args.n_head,
            "n_embd": args.n_embd, "dropout": args.dropout}
    over = {k: v for k, v in over.items() if v is not None}
    if args.bias is not None:
        over["bias"] = args.bias == "yes"
    try:
        return GPTConfig.preset(args.preset, vocab_size=vocab_size, **over)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def build_task(args: argparse.Namespace, seed: int) -> LMTask:
    """A fresh task (tokenizer trained on --text) or, when --out holds a checkpoint, the run's own."""
    out = Path(args.out)
    if latest_checkpoint(out) is not None:
        meta = read_meta(out, family=FAMILY)
        try:
            config = GPTConfig.from_dict(meta["model_config"])
        except (KeyError, TypeError, ValueError, CheckpointError) as exc:
            raise CheckpointError(f"{meta['checkpoint_dir']}: bad model configuration ({exc})") from None
        # The data stream depends on the batch size: keep the run's own so that resuming is exact.
        batch = int(meta.get("train_config", {}).get("extra", {}).get("batch_size", args.batch_size))
        tok = TextTokenizer.load(out)
        print(f"attnkit: resuming {out} from step {meta.get('step')} (the text and model flags of the run "
              f"are kept; batch size {batch})", file=sys.stderr)
        return LMTask(load_ids(out / TRAIN_IDS), load_ids(out / VAL_IDS), config, tok, batch, seed,
                      args.eval_batches)
    if (out / RUN_FILE).is_file():
        family = json.loads((out / RUN_FILE).read_text()).get("family")
        if family != FAMILY:
            raise CheckpointError(f"{out}: a run of a {family!r} model; choose another --out")
    if args.tokenizer == "bpe" and args.bpe_vocab < 257:
        raise InputError(f"--bpe-vocab must be >= 257 (256 bytes + end of text), got {args.bpe_vocab}")
    text = read_text(args.text)
    tok = train_char_tokenizer(text) if args.tokenizer == "char" else train_bytebpe([text], args.bpe_vocab)
    ids = to_array(tok.encode(text), tok.vocab_size)
    train_ids, val_ids = split_ids(ids, args.val_fraction)
    config = _fresh_config(args, tok.vocab_size)
    if len(train_ids) < config.block_size + 1:
        raise InputError(
            f"{args.text}: {len(train_ids)} training tokens, fewer than the context length + 1 "
            f"({config.block_size + 1}); use a longer text or --block-size"
        )
    return LMTask(train_ids, val_ids, config, tok, args.batch_size, seed, args.eval_batches)


def cmd_train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.eval_batches is not None and args.eval_batches < 1:
        raise InputError(f"--eval-batches must be >= 1, got {args.eval_batches}")
    task = build_task(args, args.seed)
    cfg = train_config_from_args(args, batch_size=task.batch_size, text=str(args.text))
    torch.manual_seed(cfg.seed)
    model = GPT(task.config)
    result = train(task, model, cfg, args.out, optimizer_factory=fused_adamw)
    summary = {"step": result.step, "stop": result.stop_reason, **result.eval}
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------ sample and eval
def load_lm(args: argparse.Namespace) -> tuple[GPT, TextTokenizer]:
    """The model and tokenizer of ``run_dir`` or ``--hf``, on ``--device``, in eval mode."""
    if (args.run_dir is None) == (args.hf is None):
        raise InputError("give either a run directory or --hf DIR")
    if args.hf is not None:
        model = GPT.from_hf(args.hf)
        tok = model.tokenizer
        if tok is None:
            raise CheckpointError(f"{args.hf}: no tokenizer.json or vocab.json + merges.txt")
    else:
        meta = read_meta(args.run_dir, family=FAMILY)
        try:
            config = GPTConfig.from_dict(meta["model_config"])
        except (KeyError, TypeError, ValueError, CheckpointError) as exc:
            raise CheckpointError(f"{meta['checkpoint_dir']}: bad model configuration ({exc})") from None
        model = GPT(config)
        load_model_weights(model, args.run_dir, family=FAMILY)
        tok = TextTokenizer.load(args.run_dir)
    return model.to(args.device).eval(), tok


def _prompt(prompt: str, tok: TextTokenizer) -> list[int]:
    """The prompt's token ids; an empty prompt is the end-of-text token, else a newline."""
    if prompt:
        return tok.encode(prompt)
    if tok.eos_id is not None:
        return [tok.eos_id]
    if tok.kind == "char" and "\n" in tok.tokenizer.get_vocab():
        return tok.encode("\n")
    raise InputError("the prompt is empty and the tokenizer has neither an end-of-text token nor a newline")


def cmd_sample(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 0 or args.num_samples < 1:
        raise InputError("--max-new-tokens must be >= 0 and --num-samples >= 1")
    if math.isnan(args.temperature):
        raise InputError("--temperature must be a number >= 0, got nan")
    if args.seed is not None and not -(2**63) <= args.seed < 2**63:
        raise InputError(f"--seed must fit in 64 bits, got {args.seed}")
    model, tok = load_lm(args)
    prompt = _prompt(args.prompt, tok)
    n_prompt = len(prompt)
    ctx = model.config.block_size
    if n_prompt > ctx:
        raise InputError(f"the prompt is {n_prompt} tokens, longer than the model's context of {ctx}")
    try:
        gen = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, seed=args.seed,
                               stop_tokens=(tok.eos_id,) if tok.eos_id is not None else ())
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.seed is not None:
        torch.manual_seed(args.seed)
    texts = generate_text(model, tok, [prompt] * args.num_samples, gen, device=args.device, context=ctx)
    for i, text in enumerate(texts):
        if i:
            print("\n---------------")
        print(args.prompt + text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    model, tok = load_lm(args)
    text = read_text(args.text)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    train_ids, val_ids = split_ids(ids, args.val_fraction)
    ids = {"all": ids, "train": train_ids, "val": val_ids}[args.split]
    if len(ids) < 2:
        raise InputError(f"{args.text}: the {args.split} split has fewer than 2 tokens")
    ev = evaluate_lm(model, ids, model.config.block_size, max(args.batch_size, 1))
    if args.json:
        print(json.dumps(ev._asdict()))
    else:
        print(f"loss {ev.loss:.4f}  perplexity {ev.perplexity:.3f}  tokens {ev.tokens}")
    return 0
