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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnkit.data.text import RandomBlocks, load_ids, read_text, save_ids, split_ids, to_array
from attnkit.decoding.generate import GenerationConfig, TextCallback, generate_text, stream_text
from attnkit.errors import CheckpointError, InputError
from attnkit.evaluation.perplexity import LMEval, evaluate_lm, lm_loss_sum
from attnkit.models.gpt import CONFIG_FILE, GPT, GPTConfig
from attnkit.models.hf.common import read_config
from attnkit.models.hf.gpt2 import load_gpt2
from attnkit.models.params import num_parameters
from attnkit.tasks import limits
from attnkit.tasks.runs import Run, register_hf_model_type, register_run_family
from attnkit.tokenizers.bytebpe import train_bytebpe
from attnkit.tokenizers.char import TextTokenizer, train_char_tokenizer
from attnkit.tokenizers.pretrained import CONFIG_FILE as TOKENIZER_CONFIG
from attnkit.tokenizers.pretrained import PretrainedTokenizer, load_pretrained_tokenizer
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
    block_size: int | None = None  # training length when shorter than the context (fine-tuning a checkpoint)

    @property
    def block(self) -> int:
        return self.block_size or self.config.max_len

    def batches(self, epoch: int) -> RandomBlocks:
        return RandomBlocks(self.train_ids, self.block, self.batch_size, self.seed, epoch)

    def count(self, batch) -> int:  # noqa: ANN001
        return batch.y.numel()

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:  # noqa: ANN001
        return lm_loss_sum(model, batch.x, batch.y)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        if len(self.val_ids) < 2:
            return {}
        ev = evaluate_lm(model, self.val_ids, self.block, 64, max_batches=self.eval_batches)
        return {"val_loss": ev.loss, "val_ppl": ev.perplexity}

    def metadata(self) -> dict:
        meta = {"model_config": self.config.to_dict(), "tokenizer": self.tokenizer.kind}
        return meta if self.block_size is None else {**meta, "block_size": self.block_size}

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
    task = LMTask(load_ids(out / TRAIN_IDS), load_ids(out / VAL_IDS), config, load_tokenizer(out), batch, seed,
                  eval_batches, block_size=meta.get("block_size"))
    return task, meta.get("step")


def fresh_task(out: Path, text_path: str | Path, tokenizer: str, bpe_vocab: int, preset: str, overrides: dict,
               batch_size: int, val_fraction: float, seed: int, eval_batches: int | None = None,
               init: Run | None = None) -> LMTask:
    """A new run's task: a ``tokenizer`` ("char" | "bpe" with ``bpe_vocab`` entries) trained on the text,
    the preset's config with ``overrides``, the text's tail (``val_fraction``) kept for validation. With
    ``init`` (a GPT run or Hugging Face directory to fine-tune), its tokenizer and config instead (the
    preset, tokenizer and size flags are ignored; ``max_len`` in ``overrides`` is the training length,
    default the context or 256 tokens, whichever is shorter)."""
    if init is not None:
        return _finetune_task(out, text_path, init, overrides.get("max_len"), batch_size, val_fraction, seed,
                              eval_batches)
    if (out / RUN_FILE).is_file():
        family = json.loads((out / RUN_FILE).read_text()).get("family")
        if family != FAMILY:
            raise CheckpointError(f"{out}: a run of a {family!r} model; choose another --out")
    if tokenizer == "bpe" and bpe_vocab < 257:
        raise InputError(f"--bpe-vocab must be >= 257 (256 bytes + end of text), got {bpe_vocab}")
    text = read_text(text_path)
    tok = (train_char_tokenizer(text) if tokenizer == "char"
           else train_bytebpe([text], limits.vocab_for_training("bpe_vocab", bpe_vocab, [text], 257)))
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


def _finetune_task(out: Path, text_path: str | Path, init: Run, block: int | None, batch_size: int,
                   val_fraction: float, seed: int, eval_batches: int | None) -> LMTask:
    config, tok = init.model.config, init.tokenizer
    block = min(config.max_len, 256) if block is None else block
    if not 2 <= block <= config.max_len:
        raise InputError(f"--block-size must be in [2, {config.max_len}] (the model's context), got {block}")
    ids = to_array(tok.encode(read_text(text_path)), config.vocab_size)
    train_ids, val_ids = split_ids(ids, val_fraction)
    if len(train_ids) < block + 1:
        raise InputError(f"{text_path}: {len(train_ids)} training tokens, fewer than --block-size + 1 ({block + 1})")
    return LMTask(train_ids, val_ids, config, tok, batch_size, seed, eval_batches, block_size=block)


def build_task(out: Path, text_path: str | Path, tokenizer: str, bpe_vocab: int, preset: str, overrides: dict,
               batch_size: int, val_fraction: float, seed: int,
               eval_batches: int | None = None, init: Run | None = None) -> tuple[LMTask, int | None]:
    """The run's own task when ``out`` has a checkpoint (and the step it resumes from), else a fresh one
    (and None); see :func:`resume_task` and :func:`fresh_task`."""
    if latest_checkpoint(out) is not None:
        return resume_task(out, batch_size, seed, eval_batches)
    return fresh_task(out, text_path, tokenizer, bpe_vocab, preset, overrides, batch_size, val_fraction, seed,
                      eval_batches, init), None


def check_training_memory(task: LMTask, grad_accum: int = 1, device: str | None = None) -> None:
    """InputError before the GPT is built when training it (micro-batches of batch_size blocks, the
    evaluation's batches of 64 blocks with their logits) would not fit in memory."""
    c, block = task.config, task.block
    evaluation = limits.forward_bytes(limits.shape_of(c), 64, block, 64 * block)
    options = [limits.Option("batch_size", task.batch_size, 12), limits.Option("max_len", block, 256),
               limits.Option("d_model", c.d_model, 384), limits.Option("n_layers", c.n_layers, 6),
               limits.Option("vocab_size", c.vocab_size, 1024)]
    limits.check_training(c, task.batch_size, block, options, grad_accum=grad_accum, eval_bytes=evaluation,
                          device=device)


# ------------------------------------------------------------------------------------------ inference
class Generator:
    """Continue prompts with a GPT and its tokenizer (greedy or sampled, windowed past the context)."""

    def __init__(self, model: GPT, tokenizer: TextTokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    def prompt_ids(self, prompt: str | list[int]) -> list[int]:
        """The prompt's token ids (a list of ids is taken as it is); an empty prompt is the end-of-text
        token, else a newline."""
        tok = self.tokenizer
        if isinstance(prompt, list) and prompt:
            return prompt
        if prompt:
            return tok.encode(prompt)
        if tok.eos_id is not None:
            return [tok.eos_id]
        if tok.kind == "char" and "\n" in tok.tokenizer.get_vocab():
            return tok.encode("\n")
        raise InputError("the prompt is empty and the tokenizer has neither an end-of-text token nor a newline")

    def generate(self, prompt: str | list[int] = "", max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 num_samples: int = 1, compile: bool = False) -> list[str]:
        """``num_samples`` continuations of ``prompt`` (without it; temperature 0 = greedy), each stopping
        after an end-of-text token; ``compile``: compiled one-token steps (faster on long generations, after
        a first compile of tens of seconds). InputError for a prompt longer than the context or bad options, and
        when the KV caches or the generated tokens would not fit in memory (:mod:`attnkit.tasks.limits`)."""
        ids, gen = self._prepare(prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples)
        limits.check_memory(limits.token_buffer_bytes(num_samples, max_new_tokens), "the generated tokens",
                            [limits.Option("max_new_tokens", max_new_tokens, 200), limits.Option("num_samples",
                                                                                               num_samples)])
        device = next(self.model.parameters()).device
        return generate_text(self.model, self.tokenizer, [ids] * num_samples, gen, device=device,
                             context=self.model.config.max_len, compile=compile)

    def stream(self, on_text: TextCallback, prompt: str | list[int] = "", max_new_tokens: int = 200,
               temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None, num_samples: int = 1, compile: bool = False) -> None:
        """:meth:`generate`, streamed: ``on_text(sample, piece, finished)`` receives each sample's text as it
        is generated (whole characters only; the pieces of a sample joined are what ``generate`` returns
        for it). Memory does not grow with ``max_new_tokens``."""
        ids, gen = self._prepare(prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples)
        device = next(self.model.parameters()).device
        stream_text(self.model, self.tokenizer, [ids] * num_samples, gen, on_text, device=device,
                    context=self.model.config.max_len, compile=compile)

    def _prepare(self, prompt: str | list[int], max_new_tokens: int, temperature: float, top_k: int | None,
                 top_p: float | None, seed: int | None, num_samples: int) -> tuple[list[int], GenerationConfig]:
        """The prompt's ids and the generation config, every option checked (the KV caches' memory too)."""
        ids = self.prompt_ids(prompt)
        ctx = self.model.config.max_len
        if len(ids) > ctx:
            raise InputError(f"the prompt is {len(ids)} tokens, longer than the model's context of {ctx}")
        limits.at_least("num_samples", num_samples, 1)
        limits.fits_64_bits("seed", seed)
        try:
            gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, seed=seed, stop_tokens=self.tokenizer.stop_ids)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        shape = limits.shape_of(self.model.config, num_parameters(self.model))
        fed = len(ids) if len(ids) + max_new_tokens <= ctx else max(len(ids), ctx // 2)  # a window's prompt
        need = (limits.decoding_bytes(shape, num_samples, min(shape.cache_len, len(ids) + max_new_tokens))
                + limits.forward_bytes(shape, num_samples, fed))
        limits.check_memory(need, "its KV caches", [limits.Option("num_samples", num_samples),
                                                    limits.Option("max_new_tokens", max_new_tokens, 200)],
                            device=next(self.model.parameters()).device)
        if seed is not None:
            torch.manual_seed(seed)
        return ids, gen

    def evaluate(self, text_path: str | Path, split: str = "all", val_fraction: float = 0.1,
                 batch_size: int = 32) -> LMEval:
        """Loss and perplexity on a text file (``split``: all | train | val, as training splits it)."""
        ids = np.asarray(self.tokenizer.encode(read_text(text_path)), dtype=np.int64)
        train_ids, val_ids = split_ids(ids, val_fraction)
        ids = {"all": ids, "train": train_ids, "val": val_ids}[split]
        if len(ids) < 2:
            raise InputError(f"{text_path}: the {split} split has fewer than 2 tokens")
        limits.at_least("batch_size", batch_size, 1)
        ctx = self.model.config.max_len
        rows = min(batch_size, -(-(len(ids) - 1) // ctx))  # blocks of the text, at most
        shape = limits.shape_of(self.model.config, num_parameters(self.model))
        limits.check_memory(limits.forward_bytes(shape, rows, ctx, rows * ctx), "one batch and its logits",
                            [limits.Option("batch_size", batch_size, 32)], device=next(self.model.parameters()).device)
        return evaluate_lm(self.model, ids, ctx, batch_size)


class ChatGenerator(Generator):
    """A Generator whose tokenizer carries a chat template: ``chat(messages)`` continues a conversation."""

    tokenizer: PretrainedTokenizer

    def chat_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The prompt of a conversation: the chat template with the assistant's turn opened, as tokens."""
        if not isinstance(self.tokenizer, PretrainedTokenizer):
            raise InputError("this model's tokenizer has no chat template")
        return self.tokenizer.encode_chat(messages, add_generation_prompt=True)

    def chat(self, messages: Sequence[Mapping[str, Any]], **options: Any) -> list[str]:
        """The assistant's replies to ``messages`` ([{"role": "user", "content": ...}, ...]); options as
        :meth:`Generator.generate` (max_new_tokens, temperature, top_k, top_p, seed, num_samples). Each
        reply ends with the checkpoint's end-of-turn token when it was generated."""
        return self.generate(self.chat_ids(messages), **options)


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
    tok = load_tokenizer(run_dir)
    inference = ChatGenerator(model, tok) if getattr(tok, "chat_template", None) else Generator(model, tok)
    return Run(FAMILY, Path(run_dir), model.eval(), tok, inference, meta)


def load_tokenizer(run_dir: Path) -> TextTokenizer:
    """A run's tokenizer: with the special tokens and chat template of the checkpoint it was fine-tuned
    from when it has them (tokenizer_config.json), else tokenizer.json alone."""
    if (Path(run_dir) / TOKENIZER_CONFIG).is_file():
        tok = load_pretrained_tokenizer(run_dir)
        if tok is not None:
            return tok
    return TextTokenizer.load(run_dir)


@register_hf_model_type("gpt2")
def open_gpt2_dir(path: Path) -> Run:
    """A Hugging Face GPT-2 directory with its tokenizer (tokenizer.json, or vocab.json + merges.txt)."""
    model, tok = load_gpt2(path)
    if tok is None:
        raise CheckpointError(f"{path}: no tokenizer.json or vocab.json + merges.txt")
    return Run(FAMILY, Path(path), model, tok, Generator(model, tok), read_config(path), source="huggingface")
