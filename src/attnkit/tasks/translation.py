"""Translation with any encoder-decoder of attnkit: the model factory, the training task, the translator
and the run format.

Every architecture (``transformer``; ``rnn`` from :mod:`attnkit.models.rnn`) offers ``forward(src, tgt_in)
-> logits`` and ``start_decoding(src) -> DecoderSession``, so training (through
:func:`attnkit.training.train`), greedy decoding and beam search are written once here.

A translation run directory holds ``run.json`` (family ``translation``, architecture, languages, model
config), ``config.json`` (the model config), the tokenizer(s), ``model.safetensors`` (the final weights,
optionally the average of the last checkpoints), ``metrics.jsonl`` and ``checkpoints/`` (exact resume).
:func:`load_run` opens one; it is registered with :func:`attnkit.tasks.runs.open_run`.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from attnkit.data.batching import InOrder, LazyBatches, pad_sequences, sorted_batches, token_batches
from attnkit.decoding.align import DEFAULT_LAYER, cross_attention, pharaoh, word_ids
from attnkit.decoding.options import DecodeOptions, decode
from attnkit.decoding.rules import TokenRules
from attnkit.derived import frozen_weights
from attnkit.errors import CheckpointError, InputError
from attnkit.evaluation.bleu import corpus_scores
from attnkit.layers.losses import smoothed_cross_entropy
from attnkit.models.params import num_parameters
from attnkit.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from attnkit.models.transformer import Transformer, TransformerConfig
from attnkit.tasks import limits
from attnkit.tasks.runs import Run, register_run_family
from attnkit.tokenizers.subword import BOS_ID, EOS_ID, PAD_ID, SPECIALS, SubwordTokenizer, tokenizer_files
from attnkit.training.checkpoint import (
    MODEL_FILE,
    RUN_FILE,
    atomic_write_bytes,
    list_checkpoints,
    load_model_weights,
    load_weights_into,
    read_meta_file,
    read_weights,
    weights_to_bytes,
)
from attnkit.training.subword_samples import EpochSamples

FAMILY = "translation"
ARCHS = ("transformer", "rnn")


def build_model(arch: str, config: dict) -> nn.Module:
    """The one place that maps an architecture name and its config dict to a model."""
    if arch == "transformer":
        return Transformer(TransformerConfig.from_dict(config))
    if arch == "rnn":
        return RNNSeq2Seq(RNNSeq2SeqConfig.from_dict(config))
    raise CheckpointError(f"unknown translation architecture {arch!r} (known: {', '.join(ARCHS)})")


class Batch(NamedTuple):
    src: Tensor  # [B, S]
    tgt_in: Tensor  # [B, T]: BOS y1 .. yn
    tgt_out: Tensor  # [B, T]: y1 .. yn EOS


def pair_lengths(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]) -> list[int]:
    """The padded length each pair takes in a batch: its source, or its target plus BOS/EOS."""
    return [max(len(s), len(t) + 1) for s, t in zip(src_ids, tgt_ids, strict=True)]


def make_batch(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], idx: list[int]) -> Batch:
    """Pairs ``idx`` -> padded tensors (teacher forcing: the decoder reads BOS y and predicts y EOS)."""
    src = pad_sequences([src_ids[i] for i in idx], PAD_ID)
    tgt_in = pad_sequences([tgt_ids[i] for i in idx], PAD_ID, bos=BOS_ID)
    tgt_out = pad_sequences([tgt_ids[i] for i in idx], PAD_ID, eos=EOS_ID)
    return Batch(src, tgt_in, tgt_out)


@dataclass
class TranslationTask:
    """The training task of :func:`attnkit.training.train` for a translation model.

    src_ids/tgt_ids: training pairs as id lists (no BOS/EOS); max_tokens: padded tokens (of the longer side) per
    micro-batch; val_*: validation sentences (raw text) for loss and greedy BLEU on the first
    ``val_bleu_n`` of them at each evaluation. ``samples``: with BPE-dropout, each epoch's segmentation of
    the training pairs (:class:`~attnkit.training.subword_samples.EpochSamples`), whose lengths then make that
    epoch's batches; src_ids/tgt_ids stay the usual segmentation.
    """

    src_ids: list[list[int]]
    tgt_ids: list[list[int]]
    max_tokens: int
    seed: int
    smoothing: float
    meta: dict
    src_tok: SubwordTokenizer
    tgt_tok: SubwordTokenizer
    val_src: list[str] = field(default_factory=list)
    val_tgt: list[str] = field(default_factory=list)
    val_bleu_n: int = 300
    family: str = FAMILY
    samples: EpochSamples | None = None

    def __post_init__(self) -> None:
        self.lengths = pair_lengths(self.src_ids, self.tgt_ids)

    def make_batch(self, idx: list[int]) -> Batch:
        return make_batch(self.src_ids, self.tgt_ids, idx)

    def batches(self, epoch: int) -> Sequence[Batch]:
        src, tgt = (self.src_ids, self.tgt_ids) if self.samples is None else self.samples.get(epoch)
        lengths = self.lengths if self.samples is None else pair_lengths(src, tgt)
        groups = token_batches(lengths, self.max_tokens, self.seed, epoch)
        return LazyBatches(groups, lambda _, idx: make_batch(src, tgt, idx))

    def count(self, batch: Batch) -> int:
        return int((batch.tgt_out != PAD_ID).sum())

    def loss(self, model: nn.Module, batch: Batch):  # noqa: ANN201
        # A model with its own loss: the Transformer projects only the real target positions; the RNN's hard
        # attention adds REINFORCE.
        if hasattr(model, "loss_sum"):
            return model.loss_sum(batch.src, batch.tgt_in, batch.tgt_out, smoothing=self.smoothing)
        logits = model(batch.src, batch.tgt_in)
        return smoothed_cross_entropy(logits, batch.tgt_out, smoothing=self.smoothing, ignore_index=PAD_ID)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if not self.val_src:
            return {}
        max_len = int(self.meta.get("max_len", 256))  # truncated as the training pairs are
        src = [self.src_tok.encode(s)[:max_len] for s in self.val_src]
        tgt = [self.tgt_tok.encode(s)[: max_len - 1] for s in self.val_tgt]
        total, count = 0.0, 0
        device = next(model.parameters()).device
        for idx in sorted_batches([len(s) for s in src], 4000):
            b = make_batch(src, tgt, idx)
            logits = model(b.src.to(device), b.tgt_in.to(device))
            loss = smoothed_cross_entropy(logits, b.tgt_out.to(device), smoothing=0.0, ignore_index=PAD_ID)
            total, count = total + float(loss.total), count + int(loss.count)
        n = min(self.val_bleu_n, len(self.val_src))
        if n < 1:
            return {"val_loss": total / max(count, 1)}
        translator = Translator(model, self.src_tok, self.tgt_tok, self.meta.get("max_len", 256))
        hyps = translator.translate(self.val_src[:n], beam_size=1)
        scores = corpus_scores(hyps, self.val_tgt[:n])
        return {"val_loss": total / max(count, 1), "val_bleu_greedy": scores.bleu, "val_chrf_greedy": scores.chrf,
                "val_bleu_n": n}

    def metadata(self) -> dict:
        return dict(self.meta)

    def save_extra(self, run_dir: Path) -> None:
        save_run_files(run_dir, self.meta, self.src_tok, self.tgt_tok)


def check_run_family(out: Path) -> None:
    """CheckpointError when ``out`` is a run of another family (training would overwrite it)."""
    if (out / RUN_FILE).is_file():
        old = read_meta_file(out / RUN_FILE)
        if old.get("family") != FAMILY:
            raise CheckpointError(f"{out}: run of a {old.get('family')!r} model, not a translation model")


def run_tokenizers(out: Path, src: str, tgt: str, joint: bool, vocab_size: int, train_src: list[str],
                   train_tgt: list[str]) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    """The run's tokenizers when resuming, else BPE trained on the training data (one joint or one per
    language)."""
    src_file, tgt_file = tokenizer_files(src, tgt, joint)
    if (out / RUN_FILE).is_file() and (out / src_file).is_file() and (out / tgt_file).is_file():
        return SubwordTokenizer.load(out / src_file), SubwordTokenizer.load(out / tgt_file)
    vocab_size = limits.vocab_for_training("vocab_size", vocab_size, train_src + train_tgt)
    if joint:
        tok = SubwordTokenizer.train(train_src + train_tgt, vocab_size)
        return tok, tok
    return SubwordTokenizer.train(train_src, vocab_size), SubwordTokenizer.train(train_tgt, vocab_size)


def check_training_memory(meta: dict, pairs: int, max_tokens: int, grad_accum: int = 1,
                          device: str | None = None) -> None:
    """InputError before the model is built when training it on micro-batches of ``max_tokens`` padded
    tokens (of ``pairs`` sentence pairs at most, each up to the model's max_len), with the validation's
    batches of 4000 tokens, would not fit in memory."""
    mc = meta["model_config"]
    config = (TransformerConfig if meta["arch"] == "transformer" else RNNSeq2SeqConfig).from_dict(mc)
    length = max(min(int(mc.get("max_len", 256)), max_tokens), 1)
    rows = max(min(pairs, max_tokens // length), 1)
    shape = limits.shape_of(config)
    evaluation = limits.forward_bytes(shape, max(4000 // length, 1), length, 4000)
    options = [limits.Option("max_tokens", max_tokens, 4096), limits.Option("d_model", shape.d_model, 512),
               limits.Option("d_ff", shape.d_ff, 2048),
               limits.Option("n_layers", mc.get("n_encoder_layers", mc.get("n_layers", 1)), 6),
               limits.Option("max_len", shape.max_len, 256), limits.Option("vocab_size", shape.vocab, 8000)]
    limits.check_training(config, rows, length, options, grad_accum=grad_accum, eval_bytes=evaluation,
                          device=device)


def run_meta(out: Path, fresh: Callable[[], dict]) -> dict:
    """The metadata of the run in ``out`` (architecture, languages, model config) when it has one, else
    ``fresh()``; without the family and version, which the training loop writes."""
    if (out / RUN_FILE).is_file():
        meta = {k: v for k, v in read_meta_file(out / RUN_FILE).items() if k != "attnkit_version"}
    else:
        meta = fresh()
    meta.pop("family", None)
    return meta


SAMPLES_DIR = "subword-samples"  # inside a run directory: the BPE-dropout sample of each epoch


def corpus_task(src: list[str], tgt: list[str], val_src: list[str], val_tgt: list[str], meta: dict,
                src_tok: SubwordTokenizer, tgt_tok: SubwordTokenizer, max_tokens: int, seed: int, smoothing: float,
                val_bleu_n: int, *, bpe_dropout: float = 0.0, run_dir: Path | None = None) -> TranslationTask:
    """The training task of sentence pairs, cut to the model's maximum length (the target keeps room for
    BOS/EOS). ``bpe_dropout`` > 0: every epoch trains on a new BPE-dropout segmentation of the pairs, kept in
    ``run_dir/subword-samples`` (so a resumed run is exact; ``run_dir`` is then required)."""
    max_len = int(meta["model_config"]["max_len"])

    def cut(src_ids: list[list[int]], tgt_ids: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
        return [s[:max_len] for s in src_ids], [t[: max_len - 1] for t in tgt_ids]

    src_ids, tgt_ids = cut(src_tok.encode_batch(src), tgt_tok.encode_batch(tgt))
    samples = None
    if bpe_dropout:
        if run_dir is None:
            raise ValueError("BPE-dropout keeps its samples in the run directory: give run_dir")
        samples = EpochSamples(Path(run_dir) / SAMPLES_DIR, lambda: cut(src_tok.sample_batch(src, bpe_dropout),
                                                                          tgt_tok.sample_batch(tgt, bpe_dropout)),
                               len(src))
    return TranslationTask(src_ids, tgt_ids, max_tokens, seed, smoothing, {**meta, "max_len": max_len}, src_tok,
                           tgt_tok, val_src, val_tgt, val_bleu_n, samples=samples)


def save_run_files(run_dir: Path, meta: dict, src_tok: SubwordTokenizer, tgt_tok: SubwordTokenizer) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(meta["model_config"], indent=2) + "\n")
    src_file, tgt_file = tokenizer_files(meta["src"], meta["tgt"], meta["joint"])
    src_tok.save(run_dir / src_file)
    if tgt_file != src_file:
        tgt_tok.save(run_dir / tgt_file)


def finalize_weights(run_dir: Path, model: nn.Module, average_last: int = 1) -> int:
    """Write ``run_dir/model.safetensors``: the average of the last ``average_last`` checkpoints' weights
    (or the model's weights when there are none); returns how many were averaged."""
    ckpts = list_checkpoints(run_dir)[-average_last:] if average_last > 0 else []
    if len(ckpts) <= 1:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    else:
        states = [read_weights(c / MODEL_FILE) for c in ckpts]
        state = {k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype) for k in states[0]}
        load_weights_into(model, state, run_dir)
        state = model.state_dict()
    atomic_write_bytes(run_dir / MODEL_FILE, weights_to_bytes(state))
    return max(len(ckpts), 1)


@dataclass(frozen=True)
class Specials:
    """A translation model's special target tokens: the decoder's start token, EOS, padding (of both sides),
    tokens never generated (Marian's padding) and whether EOS is forced at the length limit (the
    ``forced_eos_token_id`` of pretrained checkpoints). The default: attnkit's own runs."""

    start: int = BOS_ID
    eos: int = EOS_ID
    pad: int = PAD_ID
    banned: tuple[int, ...] = ()
    force_eos: bool = False


class Translator:
    """Translate sentences with a model and its tokenizers (batched by length, greedy or beam).

    specials: the model's special tokens (:class:`Specials`). A tokenizer with a ``languages(src_lang,
    tgt_lang) -> (tokenizer, forced target prefix)`` method (the multilingual pretrained ones of
    :mod:`attnkit.tokenizers.spm`) lets ``translate`` take ``src_lang`` / ``tgt_lang``."""

    def __init__(self, model: nn.Module, src_tok: SubwordTokenizer, tgt_tok: SubwordTokenizer, max_len: int,
                 meta: dict | None = None, specials: Specials | None = None) -> None:
        self.model, self.src_tok, self.tgt_tok, self.max_len = model, src_tok, tgt_tok, max_len
        self.meta = meta or {}
        self.specials = specials or Specials()

    def languages(self, src_lang: str | None = None, tgt_lang: str | None = None) -> tuple[Any, tuple[int, ...]]:
        """(the source tokenizer for these languages, the forced first target tokens); InputError when the
        model has no such language or no language codes at all."""
        choose = getattr(self.src_tok, "languages", None)
        if choose is not None:
            return choose(src_lang, tgt_lang)
        if src_lang is not None or tgt_lang is not None:
            pair = f" ({self.meta['src']} -> {self.meta['tgt']})" if "src" in self.meta else ""
            raise InputError(f"--src-lang / --tgt-lang: this model translates one language pair{pair}")
        return self.src_tok, ()

    def encode_sources(self, sentences: Sequence[str], warn: bool = False, tokenizer: Any = None) -> list[list[int]]:
        """Sentences -> id lists, cut to the model's maximum length (with a warning on stderr)."""
        ids = (tokenizer or self.src_tok).encode_batch(sentences)
        out = []
        for n, s in enumerate(ids):
            if len(s) > self.max_len:
                if warn:
                    print(f"attnkit: warning: line {n + 1} has {len(s)} subword tokens; truncated to the "
                          f"model's maximum length {self.max_len}", file=sys.stderr)
                s = s[: self.max_len]
            out.append(s)
        return out

    @torch.no_grad()
    @frozen_weights()  # the weights' derived copies are made once for all batches
    def translate_ids(self, src_ids: Sequence[Sequence[int]], beam_size: int = 1, length_penalty: float = 1.0,
                      max_tokens: int = 3000, extra_len: int = 50, prefix: Sequence[int] = (),
                      chunk_tokens: int | None = None,
                      on_done: Callable[[int, list[list[int]]], None] | None = None,
                      options: DecodeOptions | None = None, nbest: list | None = None) -> list[list[int]]:
        """Source id lists -> target id lists (EOS and padding removed), in the input order. prefix: forced
        first target tokens (a target-language code). options: every decoding option (:class:`DecodeOptions`;
        it replaces beam_size, length_penalty and extra_len); nbest: a list as long as src_ids that receives
        each sentence's hypotheses [(score, ids), ...] best first. Batches hold ``max_tokens`` source tokens with their
        beams (:func:`plan_batches`; ``chunk_tokens``: batched chunk by chunk, so the first lines finish
        first); ``on_done(start, ids)`` receives the translations of lines start, start+1, ... as soon as
        they and every line before them are done. InputError before any work when the batches' decoder
        caches would not fit in memory (:mod:`attnkit.tasks.limits`)."""
        limits.at_least("beam_size", beam_size, 1)
        limits.at_least("max_tokens", max_tokens, 1)
        opts = options or DecodeOptions(beam_size=beam_size, length_penalty=length_penalty, max_len_b=extra_len)
        beam_size, extra_len = opts.beam_size, opts.max_len_b
        lengths = [len(s) for s in src_ids]
        plan = plan_batches(lengths, beam_size, max_tokens, chunk_tokens)
        self._check_memory(plan, lengths, beam_size, max_tokens, extra_len)
        sp = self.specials
        rules = TokenRules(banned=sp.banned, prefix=tuple(prefix), eos_id=sp.eos, force_eos=sp.force_eos)
        compile_arg = {"compile": True} if opts.compile else {}
        if opts.compile and "compile" not in inspect.signature(self.model.start_decoding).parameters:
            raise InputError(f"--compile: a {type(self.model).__name__} model has no compiled decoding step "
                             "(Transformer models do)")
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        out: list[list[int]] = [[] for _ in src_ids]
        report = InOrder(out, on_done)
        for idx in plan:
            live = [i for i in idx if lengths[i] > 0]  # an empty line translates to an empty line
            if not live:
                report(idx)
                continue
            src = pad_sequences([src_ids[i] for i in live], sp.pad).to(device)
            budget = opts.budget(src.shape[1], self.max_len - 1)
            bos = torch.full((len(live), 1), sp.start, dtype=torch.long, device=device)
            session = self.model.start_decoding(src, budget + 1, **compile_arg)
            hyps = decode(session, bos, budget, sp.eos, sp.pad, rules, opts)
            for row, i in enumerate(live):
                clean = [(score, self._strip(seq)) for score, seq in hyps[row]]
                out[i] = clean[0][1]
                if nbest is not None:
                    nbest[i] = clean
            report(idx)
        self.model.train(was_training)
        return out

    def _strip(self, seq: list[int]) -> list[int]:
        """A hypothesis without its EOS and what follows (padding)."""
        eos, pad = self.specials.eos, self.specials.pad
        return seq[: seq.index(eos)] if eos in seq else [t for t in seq if t != pad]

    def _check_memory(self, plan: list[list[int]], lengths: list[int], beam_size: int, max_tokens: int,
                      extra_len: int) -> None:
        """InputError when the largest batch of ``plan`` (encoder pass, decoder caches of its beams) would
        not fit in the memory available."""
        shape = limits.shape_of(self.model.config, num_parameters(self.model))
        need = 0
        for idx in plan:
            live = [lengths[i] for i in idx if lengths[i] > 0]
            if live:
                s = max(live)
                cache = min(self.max_len - 1, s + extra_len) + 1
                need = max(need, limits.decoding_bytes(shape, len(live) * beam_size, cache, s, beam_size)
                           + limits.forward_bytes(shape, len(live), s))
        limits.check_memory(need, "its decoder caches", [limits.Option("beam_size", beam_size),
                                                         limits.Option("max_tokens", max_tokens, 3000)],
                            device=next(self.model.parameters()).device)

    def translate(self, sentences: Sequence[str], beam_size: int = 1, length_penalty: float = 1.0,
                  warn: bool = False, src_lang: str | None = None, tgt_lang: str | None = None,
                  max_tokens: int = 3000, chunk_tokens: int | None = None,
                  on_done: Callable[[int, list[str]], None] | None = None,
                  options: DecodeOptions | None = None, nbest: list | None = None) -> list[str]:
        """Translations of ``sentences``; src_lang / tgt_lang: the languages of a multilingual model;
        max_tokens, chunk_tokens, on_done (with the translated lines), options (every decoding option, see
        :class:`~attnkit.decoding.options.DecodeOptions`), nbest (receives [(score, text), ...] per
        sentence): see :meth:`translate_ids`."""
        tokenizer, prefix = self.languages(src_lang, tgt_lang)
        ids = self.encode_sources(sentences, warn=warn, tokenizer=tokenizer)
        done = None if on_done is None else (lambda start, out: on_done(start, self.tgt_tok.decode_batch(out)))
        hyps = None if nbest is None else [[] for _ in ids]
        out = self.translate_ids(ids, beam_size, length_penalty, max_tokens, prefix=prefix, chunk_tokens=chunk_tokens,
                                 on_done=done, options=options, nbest=hyps)
        if nbest is not None:
            nbest[:] = [[(score, self.tgt_tok.decode(h)) for score, h in sent] for sent in hyps]
        return self.tgt_tok.decode_batch(out)

    def align(self, sentences: Sequence[str], options: DecodeOptions | None = None, layer: int = DEFAULT_LAYER,
              heads: Sequence[int] | None = None, src_lang: str | None = None,
              tgt_lang: str | None = None) -> list[Aligned]:
        """Translate ``sentences`` and align each translation's words to the source's with the decoder's
        cross-attention (:mod:`attnkit.decoding.align`: ``layer`` and ``heads`` averaged)."""
        tokenizer, prefix = self.languages(src_lang, tgt_lang)
        src_ids = self.encode_sources(sentences, tokenizer=tokenizer)
        out_ids = self.translate_ids(src_ids, prefix=prefix, options=options)
        device = next(self.model.parameters()).device
        result = []
        for src, out in zip(src_ids, out_ids, strict=True):
            if not src:
                result.append(Aligned("", [], torch.zeros(0, 0), [], []))
                continue
            tgt_in = torch.tensor([[self.specials.start, *out]], device=device)
            weights = cross_attention(self.model, torch.tensor([src], device=device), tgt_in, layer, heads)[0, :-1]
            src_tokens, tgt_tokens = tokenizer.tokens(src), self.tgt_tok.tokens(out)
            pairs = pharaoh(weights.cpu(), word_ids(src_tokens, _specials(tokenizer, src)),
                            word_ids(tgt_tokens, _specials(self.tgt_tok, out)))
            result.append(Aligned(self.tgt_tok.decode(out), pairs, weights.cpu(), src_tokens, tgt_tokens))
        return result

    def target_ids(self, text: str) -> tuple[int, ...]:
        """Target-side token ids of ``text`` without special tokens (a forced prefix, ``--prefix``)."""
        encode = getattr(self.tgt_tok, "encode_target", self.tgt_tok.encode)
        return tuple(encode(text))


class Aligned(NamedTuple):
    """A translation with its word alignment: Pharaoh pairs (source word, target word), the token-level
    weights [T, S] they come from and the tokens."""

    text: str
    pairs: list[tuple[int, int]]
    weights: Tensor
    src_tokens: list[str]
    tgt_tokens: list[str]


def _specials(tokenizer: Any, ids: Sequence[int]) -> list[bool]:
    special = getattr(tokenizer, "special_ids", None)
    special = set(range(len(SPECIALS))) if special is None else special  # attnkit's BPE: <pad> <s> </s> <unk>
    return [i in special for i in ids]


def plan_batches(lengths: Sequence[int], beam_size: int, max_tokens: int,
                 chunk_tokens: int | None = None) -> list[list[int]]:
    """The decoding batches of sentences of ``lengths``: sorted by length and cut at ``max_tokens //
    beam_size`` source tokens (a longer sentence alone), over the whole input, or (``chunk_tokens``) over
    consecutive chunks of about that many source tokens, one chunk after the other, so that the first
    lines are done first. Every index appears once."""
    per_batch = max_tokens // beam_size or 1
    if chunk_tokens is None:
        return sorted_batches(lengths, per_batch)
    plan: list[list[int]] = []
    start = 0
    while start < len(lengths):
        end, total = start + 1, max(lengths[start], 1)
        while end < len(lengths) and total + max(lengths[end], 1) <= chunk_tokens:
            total, end = total + max(lengths[end], 1), end + 1
        plan += [[start + i for i in batch] for batch in sorted_batches(lengths[start:end], per_batch)]
        start = end
    return plan


def load_run(run_dir: str | Path) -> Translator:
    """A Translator from a run directory; CheckpointError for a missing, corrupt or foreign run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        raise CheckpointError(f"{run_dir}: not a training run directory (no {RUN_FILE})")
    meta = read_meta_file(run_file)
    if meta.get("family") != FAMILY:
        raise CheckpointError(f"{run_dir}: run of a {meta.get('family')!r} model, not a translation model")
    try:
        model = build_model(meta["arch"], meta["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run_file}: bad model configuration ({exc})") from None
    weights = run_dir / MODEL_FILE
    if weights.is_file():
        load_weights_into(model, read_weights(weights), weights)
    else:
        load_model_weights(model, run_dir, FAMILY)
    src_file, tgt_file = tokenizer_files(meta["src"], meta["tgt"], meta["joint"])
    src_tok = SubwordTokenizer.load(run_dir / src_file)
    tgt_tok = SubwordTokenizer.load(run_dir / tgt_file)
    return Translator(model.eval(), src_tok, tgt_tok, int(meta["model_config"].get("max_len", 256)), meta)


@register_run_family(FAMILY)
def open_translation_run(run_dir: Path) -> Run:
    """The :class:`~attnkit.tasks.runs.Run` of a translation run directory (see :func:`load_run`)."""
    translator = load_run(run_dir)
    return Run(FAMILY, Path(run_dir), translator.model, translator.src_tok, translator, translator.meta,
               target_tokenizer=translator.tgt_tok)
