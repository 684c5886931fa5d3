"""GPT language models: the training task, the generator, and the run format.

A GPT run directory (family ``gpt``) holds ``run.json``, ``gpt_config.json``, the tokenizer
(``tokenizer.json``: characters or byte-level BPE), the token ids it was trained on (``data/train.npy``,
``data/val.npy``, so resuming is exact), ``metrics.jsonl`` and ``checkpoints/``. Both GPT runs and Hugging
Face GPT-2 directories are registered with :func:`attnkit.tasks.runs.open_run`.

Documented behaviours: an empty prompt starts from the end-of-text token (GPT-2) or a newline (characters);
generation longer than the model's context goes on in windows (the last half of the context is fed again,
see :func:`attnkit.decoding.generate.generate_text`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnkit.data.text import RandomBlocks, load_ids, read_text, save_ids, split_ids, to_array
from attnkit.decoding.generate import GenerationConfig, generate_text
from attnkit.errors import CheckpointError, InputError
from attnkit.evaluation.perplexity import LMEval, evaluate_lm, lm_loss_sum
from attnkit.models.gpt import CONFIG_FILE, GPT, GPTConfig
from attnkit.models.hf.common import read_config
from attnkit.models.hf.gpt2 import load_gpt2
from attnkit.tasks.runs import Run, register_hf_model_type, register_run_family
from attnkit.tokenizers.bytebpe import train_bytebpe
from attnkit.tokenizers.char import TextTokenizer, train_char_tokenizer
from attnkit.training.checkpoint import RUN_FILE, latest_checkpoint, load_model_weights, read_meta

FAMILY = "gpt"
TRAIN_IDS, VAL_IDS = "data/train.npy", "data/val.npy"


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
        return RandomBlocks(self.train_ids, self.config.max_len, self.batch_size, self.seed, epoch)

    def count(self, batch) -> int:  # noqa: ANN001
        return batch.y.numel()

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:  # noqa: ANN001
        return lm_loss_sum(model, batch.x, batch.y)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        if len(self.val_ids) < 2:
            return {}
        ev = evaluate_lm(model, self.val_ids, self.config.max_len, 64, max_batches=self.eval_batches)
        return {"val_loss": ev.loss, "val_ppl": ev.perplexity}

    def metadata(self) -> dict:
        return {"model_config": self.config.to_dict(), "tokenizer": self.tokenizer.kind}

    def save_extra(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir)
        self.config.save(run_dir / CONFIG_FILE)
        (run_dir / "data").mkdir(exist_ok=True)
        save_ids(run_dir / TRAIN_IDS, self.train_ids)
        save_ids(run_dir / VAL_IDS, self.val_ids)


def _run_config(meta: dict) -> GPTConfig:
    try:
        return GPTConfig.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError, CheckpointError) as exc:
        raise CheckpointError(f"{meta['checkpoint_dir']}: bad model configuration ({exc})") from None


def resume_task(out: Path, batch_size: int, seed: int, eval_batches: int | None = None) -> tuple[LMTask, int]:
    """The task of a run that has a checkpoint (its own text, tokenizer, model config and batch size, so
    that resuming is exact) and the step it resumes from."""
    meta = read_meta(out, family=FAMILY)
    config = _run_config(meta)
    # The data stream depends on the batch size: keep the run's own.
    batch = int(meta.get("train_config", {}).get("extra", {}).get("batch_size", batch_size))
    task = LMTask(load_ids(out / TRAIN_IDS), load_ids(out / VAL_IDS), config, TextTokenizer.load(out), batch, seed,
                  eval_batches)
    return task, meta.get("step")


def fresh_task(out: Path, text_path: str | Path, tokenizer: str, bpe_vocab: int, preset: str, overrides: dict,
               batch_size: int, val_fraction: float, seed: int, eval_batches: int | None = None) -> LMTask:
    """A new run's task: a ``tokenizer`` ("char" | "bpe" with ``bpe_vocab`` entries) trained on the text,
    the preset's config with ``overrides``, the text's tail (``val_fraction``) kept for validation."""
    if (out / RUN_FILE).is_file():
        family = json.loads((out / RUN_FILE).read_text()).get("family")
        if family != FAMILY:
            raise CheckpointError(f"{out}: a run of a {family!r} model; choose another --out")
    if tokenizer == "bpe" and bpe_vocab < 257:
        raise InputError(f"--bpe-vocab must be >= 257 (256 bytes + end of text), got {bpe_vocab}")
    text = read_text(text_path)
    tok = train_char_tokenizer(text) if tokenizer == "char" else train_bytebpe([text], bpe_vocab)
    ids = to_array(tok.encode(text), tok.vocab_size)
    train_ids, val_ids = split_ids(ids, val_fraction)
    try:
        config = GPTConfig.preset(preset, vocab_size=tok.vocab_size, **overrides)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if len(train_ids) < config.max_len + 1:
        raise InputError(
            f"{text_path}: {len(train_ids)} training tokens, fewer than the context length + 1 "
            f"({config.max_len + 1}); use a longer text or --block-size"
        )
    return LMTask(train_ids, val_ids, config, tok, batch_size, seed, eval_batches)


def build_task(out: Path, text_path: str | Path, tokenizer: str, bpe_vocab: int, preset: str, overrides: dict,
               batch_size: int, val_fraction: float, seed: int,
               eval_batches: int | None = None) -> tuple[LMTask, int | None]:
    """The run's own task when ``out`` has a checkpoint (and the step it resumes from), else a fresh one
    (and None); see :func:`resume_task` and :func:`fresh_task`."""
    if latest_checkpoint(out) is not None:
        return resume_task(out, batch_size, seed, eval_batches)
    return fresh_task(out, text_path, tokenizer, bpe_vocab, preset, overrides, batch_size, val_fraction, seed,
                      eval_batches), None


# ------------------------------------------------------------------------------------------ inference
class Generator:
    """Continue prompts with a GPT and its tokenizer (greedy or sampled, windowed past the context)."""

    def __init__(self, model: GPT, tokenizer: TextTokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's token ids; an empty prompt is the end-of-text token, else a newline."""
        tok = self.tokenizer
        if prompt:
            return tok.encode(prompt)
        if tok.eos_id is not None:
            return [tok.eos_id]
        if tok.kind == "char" and "\n" in tok.tokenizer.get_vocab():
            return tok.encode("\n")
        raise InputError("the prompt is empty and the tokenizer has neither an end-of-text token nor a newline")

    def generate(self, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 num_samples: int = 1) -> list[str]:
        """``num_samples`` continuations of ``prompt`` (without it; temperature 0 = greedy), each stopping
        after an end-of-text token. InputError for a prompt longer than the context or bad options."""
        ids = self.prompt_ids(prompt)
        ctx = self.model.config.max_len
        if len(ids) > ctx:
            raise InputError(f"the prompt is {len(ids)} tokens, longer than the model's context of {ctx}")
        eos = self.tokenizer.eos_id
        try:
            gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, seed=seed, stop_tokens=(eos,) if eos is not None else ())
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if seed is not None:
            torch.manual_seed(seed)
        device = next(self.model.parameters()).device
        return generate_text(self.model, self.tokenizer, [ids] * num_samples, gen, device=device, context=ctx)

    def evaluate(self, text_path: str | Path, split: str = "all", val_fraction: float = 0.1,
                 batch_size: int = 32) -> LMEval:
        """Loss and perplexity on a text file (``split``: all | train | val, as training splits it)."""
        ids = np.asarray(self.tokenizer.encode(read_text(text_path)), dtype=np.int64)
        train_ids, val_ids = split_ids(ids, val_fraction)
        ids = {"all": ids, "train": train_ids, "val": val_ids}[split]
        if len(ids) < 2:
            raise InputError(f"{text_path}: the {split} split has fewer than 2 tokens")
        return evaluate_lm(self.model, ids, self.model.config.max_len, max(batch_size, 1))


# ------------------------------------------------------------------------------------------ run format
def load_lm(run_dir: str | Path) -> tuple[GPT, TextTokenizer]:
    """The model (eval mode, CPU) and tokenizer of a GPT run directory."""
    run = open_gpt_run(Path(run_dir))
    return run.model, run.tokenizer


@register_run_family(FAMILY)
def open_gpt_run(run_dir: Path) -> Run:
    meta = read_meta(run_dir, family=FAMILY)
    model = GPT(_run_config(meta))
    load_model_weights(model, run_dir, family=FAMILY)
    tok = TextTokenizer.load(run_dir)
    return Run(FAMILY, Path(run_dir), model.eval(), tok, Generator(model, tok), meta)


@register_hf_model_type("gpt2")
def open_gpt2_dir(path: Path) -> Run:
    """A Hugging Face GPT-2 directory with its tokenizer (tokenizer.json, or vocab.json + merges.txt)."""
    model, tok = load_gpt2(path)
    if tok is None:
        raise CheckpointError(f"{path}: no tokenizer.json or vocab.json + merges.txt")
    return Run(FAMILY, Path(path), model, tok, Generator(model, tok), read_config(path), source="huggingface")
