"""The two built-in demos' tasks (``attnkit demo``, ``attnkit attention-demo``); the commands only print.

* Dates -> ISO dates: a small Transformer trained on a generated parallel corpus of dates written out in
  words in many formats (:mod:`attnkit.data.dates`), through the shared training loop; the run directory is
  a normal translation run. :func:`dates_demo` builds it, :func:`cross_attention` gives the weights the
  demo draws.
* The alignment task for every scoring function of part 1: each example is N (key, value) token pairs and a
  query token equal to one of the keys; the model must output the value paired with it. It embeds keys,
  values and the query, attends with soft attention in key-value mode using the chosen scoring function,
  and classifies the attended vector. Attention that learned the alignment puts its weight on the
  matching key.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit.attention import SoftAttention
from attnkit.attention.scoring import SCORE_NAMES, make_score
from attnkit.data.dates import dates_corpus
from attnkit.data.parallel import ParallelCorpus
from attnkit.errors import InputError
from attnkit.models.transformer import Transformer, TransformerConfig
from attnkit.tasks import limits
from attnkit.tasks.translation import TranslationTask, Translator, finalize_weights
from attnkit.tokenizers.subword import BOS_ID, SubwordTokenizer
from attnkit.training import TrainConfig
from attnkit.training.checkpoint import RUN_FILE, read_meta_file

SCORES = SCORE_NAMES


# --------------------------------------------------------------------------------------------- dates
def prepare_out(out: Path) -> None:
    """Remove an earlier demo run in ``out``; InputError for a directory that is not one."""
    if out.exists():
        meta = read_meta_file(out / RUN_FILE) if (out / RUN_FILE).is_file() else {}
        if meta.get("demo") is not True:
            raise InputError(f"{out} exists and is not an earlier demo run; choose another --out")
        shutil.rmtree(out)


def _target_tokenizer(texts: list[str]) -> SubwordTokenizer:
    """Characters only (vocabulary = specials + alphabet: no merges), so every digit is its own token."""
    alphabet = {c for t in texts for c in t} | {"▁"}
    return SubwordTokenizer.train(texts, vocab_size=4 + len(alphabet), min_frequency=1)


# Held-out dates are excluded from training; there are 73,049 dates in 1900-2099, and the held-out ones
# must leave most of them to train on (the training set is drawn from the others).
MAX_TEST_SIZE = 10_000
# Memory of one generated training pair: two strings, their token ids and the task's lists (measured:
# about 2.5 kB).
PAIR_BYTES = 4000


def check_sizes(train_size: int, test_size: int, seed: int) -> None:
    """InputError for demo sizes that cannot work: no training or test pairs, more held-out dates than the
    calendar leaves for training, a corpus that would not fit in memory, a seed beyond 64 bits."""
    with limits.option_names({"train_size": "--train-size", "test_size": "--test-size", "seed": "--seed"}):
        limits.at_least("train_size", train_size, 1)
        limits.in_range("test_size", test_size, 1, MAX_TEST_SIZE, "the held-out dates must leave most of the "
                        "73,049 dates of 1900-2099 for training")
        limits.fits_64_bits("seed", seed)
        limits.check_memory(PAIR_BYTES * (train_size + test_size), "the generated corpus",
                            [limits.Option("train_size", train_size, 30000), limits.Option("test_size", test_size,
                                                                                           1000)])


@dataclass
class DatesDemo:
    """The dates demo before training: the task, the model and the loop's config, and the held-out dates."""

    train_set: ParallelCorpus
    test: ParallelCorpus
    task: TranslationTask
    model: Transformer
    train_config: TrainConfig

    def translator(self, out: Path) -> Translator:
        """After training into ``out``: write the final weights, return the trained model's Translator."""
        finalize_weights(out, self.model)
        t = self.task
        return Translator(self.model.eval(), t.src_tok, t.tgt_tok, self.model.config.max_len, t.meta)


@dataclass(frozen=True)
class DemoSize:
    """The demo model's width and depth, its batch size (tokens), peak learning rate and warm-up steps."""

    d_model: int
    d_ff: int
    layers: int
    max_tokens: int
    lr: float
    warmup: int


# "demo": `attnkit demo` (99.9% exact match in 1,500 steps); "test": what the tests train in seconds (one
# layer each side: measured 95% exact match on 1,000 held-out dates after 250 steps from 3,000 pairs).
DEMO_SIZES = {"demo": DemoSize(128, 256, 2, 2048, 2e-3, 150), "test": DemoSize(64, 128, 1, 384, 4e-3, 50)}


def dates_demo(train_size: int, test_size: int, steps: int, time_limit: float, seed: int,
               quiet: bool = False, size: str = "demo") -> DatesDemo:
    """Corpus (held-out dates never seen in training), tokenizers (BPE source, character target), a small
    Transformer of ``size`` (:data:`DEMO_SIZES`) and its training recipe (a few minutes at most on 2 CPU
    cores)."""
    z = DEMO_SIZES[size]
    test = dates_corpus(test_size, seed=seed + 1)
    train_set = dates_corpus(train_size, seed=seed, exclude=set(test.tgt))
    src_tok = SubwordTokenizer.train(train_set.src, vocab_size=400)
    tgt_tok = _target_tokenizer(train_set.tgt)
    cfg = TransformerConfig(src_vocab_size=src_tok.vocab_size, tgt_vocab_size=tgt_tok.vocab_size, d_model=z.d_model,
                            n_heads=4, d_ff=z.d_ff, n_encoder_layers=z.layers, n_decoder_layers=z.layers,
                            dropout=0.0, max_len=64, share_embeddings=False)
    model = Transformer(cfg)
    meta = {"arch": "transformer", "src": "words", "tgt": "iso", "joint": False, "model_config": cfg.to_dict(),
            "max_len": cfg.max_len, "demo": True}
    task = TranslationTask(src_tok.encode_batch(train_set.src), tgt_tok.encode_batch(train_set.tgt), z.max_tokens,
                           seed, 0.0, meta, src_tok, tgt_tok)
    tcfg = TrainConfig(max_steps=steps, lr=z.lr, warmup=z.warmup, schedule="cosine", min_lr=1e-4,
                       clip_norm=1.0, ckpt_every=0, keep_last=1, log_every=50, seed=seed, time_limit_s=time_limit,
                       quiet=quiet)
    return DatesDemo(train_set, test, task, model, tcfg)


@torch.no_grad()
def cross_attention(translator: Translator, sentence: str) -> tuple[Tensor, list[str], list[str], str]:
    """Greedy-translate ``sentence``; the last decoder layer's cross-attention averaged over heads [T, S]
    (row t: the step that predicts target token t), the source and target tokens, and the translation."""
    model = translator.model
    src_ids = translator.encode_sources([sentence])[0]
    out_ids = translator.translate_ids([src_ids])[0]
    src = torch.tensor([src_ids])
    tgt_in = torch.tensor([[BOS_ID] + out_ids])
    memory = model.encode(src).hidden
    dec = model.decode(tgt_in, memory, model.source_mask(src), need_weights=True)
    weights = dec.cross_weights[-1][0].mean(0)  # (T, S): last layer, averaged over heads
    src_tokens = translator.src_tok.tokens(src_ids)
    tgt_tokens = translator.tgt_tok.tokens(out_ids) + ["</s>"]
    return weights[: len(tgt_tokens)], src_tokens, tgt_tokens, translator.tgt_tok.decode(out_ids)


# ----------------------------------------------------------------------------------------- alignment

def make_batch(batch: int, pairs: int, vocab: int, generator: torch.Generator) -> tuple[Tensor, ...]:
    """keys, values [B, N] (distinct keys per row), query [B, 1], answer position [B], answer value [B]."""
    keys = torch.argsort(torch.rand(batch, vocab, generator=generator), dim=1)[:, :pairs]
    values = torch.randint(0, vocab, (batch, pairs), generator=generator)
    pos = torch.randint(0, pairs, (batch,), generator=generator)
    query = keys.gather(1, pos[:, None])
    return keys, values, query, pos, values.gather(1, pos[:, None]).squeeze(1)


class AlignmentModel(nn.Module):
    def __init__(self, score: str, vocab: int = 32, dim: int = 32) -> None:
        super().__init__()
        self.key_emb, self.value_emb = nn.Embedding(vocab, dim), nn.Embedding(vocab, dim)
        self.attention = SoftAttention(make_score(score, dim))
        self.out = nn.Linear(dim, vocab)

    def forward(self, keys: Tensor, values: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """keys, values [B, N], query [B, 1] -> logits [B, vocab], weights [B, N]."""
        k = self.key_emb(keys)
        out, w = self.attention(self.key_emb(query), k, self.value_emb(values))  # (B, 1, D), (B, 1, N)
        return self.out(out[:, 0]), w[:, 0]


@dataclass
class DemoResult:
    score: str
    accuracy: float  # held-out answer accuracy
    alignment: float  # how often the largest attention weight sits on the matching key
    weights: Tensor  # [n_show, N] attention weights of a few held-out examples
    keys: Tensor  # [n_show, N]
    query: Tensor  # [n_show]


# The alignment task is learned in a few hundred steps; more than this is a typo, not a longer run.
ALIGNMENT_MAX_STEPS = 20_000


def check_alignment_args(steps: int, seed: int) -> None:
    """InputError for a number of steps outside [1, ALIGNMENT_MAX_STEPS] or a seed beyond 64 bits."""
    limits.in_range("steps", steps, 1, ALIGNMENT_MAX_STEPS, "the task is learned in a few hundred steps")
    limits.fits_64_bits("seed", seed)


def train_alignment(score: str, *, steps: int = 400, pairs: int = 8, vocab: int = 32, seed: int = 0) -> DemoResult:
    """Train one model with ``score`` and evaluate it on 2,000 held-out examples."""
    check_alignment_args(steps, seed)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = AlignmentModel(score, vocab)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        keys, values, query, _, answer = make_batch(128, pairs, vocab, g)
        logits, _ = model(keys, values, query)
        loss = nn.functional.cross_entropy(logits, answer)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        keys, values, query, pos, answer = make_batch(2000, pairs, vocab, torch.Generator().manual_seed(seed + 1))
        logits, w = model(keys, values, query)
    return DemoResult(
        score,
        (logits.argmax(-1) == answer).float().mean().item(),
        (w.argmax(-1) == pos).float().mean().item(),
        w[:4],
        keys[:4],
        query[:4, 0],
    )
