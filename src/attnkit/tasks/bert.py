"""BERT's tasks: the two training tasks for the shared loop (:func:`attnkit.training.train`), the
classifier, and the run format.

* :class:`MLMTask` (family ``bert-mlm``): masked-LM pre-training on lines of text, batches by tokens, each
  batch's corruption seeded by (seed, epoch, batch index) so resuming replays it exactly; evaluation
  reports the validation loss and masked-token accuracy on a fixed corruption of the validation lines.
* :class:`ClassifyTask` (family ``bert-classify``): sentence classification from the pooled [CLS] output;
  evaluation reports held-out loss and accuracy.
A run directory keeps its tokenizer in ``run/tokenizer/``. Registered with
:func:`attnkit.tasks.runs.open_run`: both run families and Hugging Face ``bert`` directories (an encoder
for sentence embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.batching import LazyBatches
from attnkit.data.lines import read_lines
from attnkit.data.mlm import IGNORE, batch_generator, mask_tokens
from attnkit.data.resumable import epoch_rng, token_batches
from attnkit.data.tsv import LabelledText, holdout_split, read_tsv
from attnkit.derived import frozen_weights
from attnkit.errors import CheckpointError, InputError
from attnkit.evaluation.accuracy import accuracy
from attnkit.models.bert import BERT, BERTConfig, BERTForMaskedLM, BERTForSequenceClassification
from attnkit.models.hf.bert import load_bert
from attnkit.models.hf.common import read_config
from attnkit.tasks import limits
from attnkit.tasks.embed import Embedder
from attnkit.tasks.precision import set_precision
from attnkit.tasks.runs import Run, open_run, register_hf_model_type, register_run_family
from attnkit.tokenizers.wordpiece import SPECIALS, Encoded, WordPiece
from attnkit.training import latest_checkpoint, load_model_weights, move_to, read_meta

MLM_FAMILY, CLASSIFY_FAMILY = "bert-mlm", "bert-classify"
HF_FAMILY = "bert"  # the Run family of a Hugging Face BERT directory
TOKENIZER_DIR = "tokenizer"


@dataclass
class MLMBatch:
    input_ids: Tensor  # [B, T] corrupted
    attention_mask: Tensor  # [B, T] 1 = real token
    labels: Tensor  # [B, T] original ids at chosen positions, IGNORE elsewhere


class MLMTask:
    family = MLM_FAMILY

    def __init__(
        self, train_ids: list[list[int]], val_ids: list[list[int]], tokenizer: WordPiece, config: BERTConfig,
        *, max_tokens: int = 4096, seed: int = 0,
    ) -> None:
        self.train_ids, self.val_ids, self.tok, self.config = train_ids, val_ids, tokenizer, config
        self.max_tokens, self.seed = max_tokens, seed
        self.lengths = [len(s) for s in train_ids]

    def _mask(self, seqs: list[list[int]], gen: torch.Generator) -> MLMBatch:
        ids, attn = self.tok.pad(seqs)
        m = mask_tokens(ids, attn, mask_id=self.tok.mask_id, vocab_size=self.config.vocab_size,
                        special_ids=self.tok.special_ids, generator=gen)
        return MLMBatch(m.input_ids, attn, m.labels)

    def batches(self, epoch: int) -> Sequence[MLMBatch]:
        groups = token_batches(self.lengths, self.max_tokens, self.seed, epoch)
        return LazyBatches(
            groups, lambda i, g: self._mask([self.train_ids[j] for j in g], batch_generator(self.seed, epoch, i))
        )

    def count(self, batch: MLMBatch) -> int:
        return int((batch.labels != IGNORE).sum())

    def loss(self, model: nn.Module, batch: MLMBatch) -> tuple[Tensor, Tensor]:
        chosen = batch.labels != IGNORE  # (B, T)
        logits = model(batch.input_ids, batch.attention_mask, select=chosen).logits  # (N, V)
        target = batch.labels[chosen]  # (N,)
        return F.cross_entropy(logits.float(), target, reduction="sum"), chosen.sum()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        total = correct = 0.0
        n = 0
        groups = token_batches([len(s) for s in self.val_ids], self.max_tokens, self.seed, 0)
        device = next(model.parameters()).device
        for i, g in enumerate(groups):
            b = move_to(self._mask([self.val_ids[j] for j in g], batch_generator(self.seed + 1, -1, i)), device)
            chosen = b.labels != IGNORE
            logits = model(b.input_ids, b.attention_mask, select=chosen).logits.float()
            total += float(F.cross_entropy(logits, b.labels[chosen], reduction="sum"))
            correct += float((logits.argmax(-1) == b.labels[chosen]).sum())
            n += int(chosen.sum())
        return {"val_loss": total / max(n, 1), "masked_accuracy": correct / max(n, 1), "val_targets": n}

    def metadata(self) -> dict:
        return {"model_config": self.config.to_dict()}

    def save_extra(self, run_dir: Path) -> None:
        self.tok.save(Path(run_dir) / TOKENIZER_DIR, self.config.max_len)


class ClassifyTask:
    family = CLASSIFY_FAMILY

    def __init__(
        self, train_ids: list[list[int]], train_labels: list[int], val_ids: list[list[int]], val_labels: list[int],
        tokenizer: WordPiece, config: BERTConfig, label_names: list[str], *, batch_size: int = 32, seed: int = 0,
    ) -> None:
        self.train_ids, self.train_labels, self.val_ids, self.val_labels = train_ids, train_labels, val_ids, val_labels
        self.tok, self.config, self.label_names = tokenizer, config, label_names
        self.batch_size, self.seed = batch_size, seed

    def _batch(self, ids: list[list[int]], labels: list[int], group: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        x, attn = self.tok.pad([ids[j] for j in group])
        return x, attn, torch.tensor([labels[j] for j in group])

    def batches(self, epoch: int) -> Sequence[tuple[Tensor, Tensor, Tensor]]:
        """Shuffled, then sorted by length inside pools of 50 batches (little padding), batch order shuffled."""
        rng = epoch_rng(self.seed, epoch)
        order = rng.permutation(len(self.train_ids)).tolist()
        pool = 50 * self.batch_size
        groups = []
        for s in range(0, len(order), pool):
            part = sorted(order[s : s + pool], key=lambda j: len(self.train_ids[j]))
            groups += [part[k : k + self.batch_size] for k in range(0, len(part), self.batch_size)]
        groups = [groups[k] for k in rng.permutation(len(groups)).tolist()]
        return LazyBatches(groups, lambda i, g: self._batch(self.train_ids, self.train_labels, g))

    def count(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        return int(batch[2].numel())

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        x, attn, y = batch
        return F.cross_entropy(model(x, attn).logits.float(), y, reduction="sum")

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        preds, loss = predict(model, self.tok, self.val_ids, self.batch_size, self.val_labels)
        return {"val_loss": loss, "val_accuracy": accuracy(preds, self.val_labels), "val_examples": len(preds)}

    def metadata(self) -> dict:
        return {"model_config": self.config.to_dict(), "labels": self.label_names}

    def save_extra(self, run_dir: Path) -> None:
        self.tok.save(Path(run_dir) / TOKENIZER_DIR, self.config.max_len)


def predict(
    model: nn.Module, tok: WordPiece, ids: list[list[int]], batch_size: int = 64, labels: list[int] | None = None
) -> tuple[list[int], float]:
    """Predicted class of every sequence (length-sorted batches) and the mean loss if ``labels`` are given."""
    order = sorted(range(len(ids)), key=lambda j: len(ids[j]))
    preds = [0] * len(ids)
    total = 0.0
    device = next(model.parameters()).device
    with torch.inference_mode(), frozen_weights():
        for s in range(0, len(order), batch_size):
            group = order[s : s + batch_size]
            x, attn = tok.pad([ids[j] for j in group])
            logits = model(x.to(device), attn.to(device)).logits.float().cpu()  # (b, C)
            for j, p in zip(group, logits.argmax(-1).tolist(), strict=True):
                preds[j] = p
            if labels is not None:
                total += float(F.cross_entropy(logits, torch.tensor([labels[j] for j in group]), reduction="sum"))
    return preds, total / max(len(ids), 1)


# --------------------------------------------------------------------------------------------- preparing
class MLMSetup(NamedTuple):
    task: MLMTask
    model: BERTForMaskedLM
    truncated: list[int]  # 0-based file lines of the sentences cut to the model's maximum length


def prepare_mlm(text: str | Path, run: Path, preset: str, vocab_size: int, val_fraction: float, seed: int,
                max_tokens: int, tokenizer: str | None = None, grad_accum: int = 1,
                device: str | None = None) -> MLMSetup:
    """Task and model for a fresh or resumed masked-LM run: tokenizer and config come from ``run`` when it
    has a checkpoint, else are trained (or read from ``tokenizer``) / taken from the preset."""
    raw = read_lines(text)
    numbers = [i for i, s in enumerate(raw) if s.strip()]  # 0-based file lines of the kept sentences
    lines = [raw[i] for i in numbers]
    if len(lines) < 2:
        raise InputError(f"{text}: need at least 2 non-empty lines of text, found {len(lines)}")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    train_idx, val_idx = holdout_split(len(lines), val_fraction, seed)
    if latest_checkpoint(run) is not None:
        tok = WordPiece.from_dir(run / TOKENIZER_DIR)
        config = BERTConfig.from_dict(read_meta(run, family=MLM_FAMILY)["model_config"])
    else:
        if vocab_size < 10:
            raise InputError(f"--vocab-size must be >= 10, got {vocab_size}")
        if tokenizer is not None:
            tok = WordPiece.from_dir(tokenizer)
        else:
            train_lines = [lines[i] for i in train_idx]
            tok = WordPiece.train(train_lines, limits.vocab_for_training("vocab_size", vocab_size, train_lines))
            if tok.vocab_size <= len(SPECIALS):
                raise InputError(f"{text}: the training lines have no word pieces to learn (only control "
                                 "characters or whitespace?)")
        config = BERTConfig.preset(preset, vocab_size=tok.vocab_size)
    enc = tok.encode(lines, max_length=config.max_len)
    task = MLMTask([enc.ids[i] for i in train_idx], [enc.ids[i] for i in val_idx], tok, config,
                   max_tokens=max_tokens, seed=seed)
    length = max((len(s) for s in enc.ids), default=1)
    rows = max(min(len(train_idx), max_tokens // length), 1)
    options = [limits.Option("max_tokens", max_tokens, 4096), limits.Option("vocab_size", config.vocab_size, 8000)]
    limits.check_training(config, rows, length, options, grad_accum=grad_accum, device=device,
                          logit_positions=rows * length // 6)  # the masked 15%, with room
    return MLMSetup(task, BERTForMaskedLM(config), [numbers[i] for i in enc.truncated])


def resume_classifier(run: Path) -> tuple[BERTForSequenceClassification, WordPiece, list[str]]:
    """A fresh classifier of a run's shape, its tokenizer and labels (the loop then loads the checkpoint)."""
    meta = read_meta(run, family=CLASSIFY_FAMILY)
    labels = meta["labels"]
    model = BERTForSequenceClassification(BERTConfig.from_dict(meta["model_config"]), len(labels))
    return model, WordPiece.from_dir(run / TOKENIZER_DIR), labels


def init_classifier(init: str | Path, n_labels: int, from_scratch: bool) -> tuple[BERTForSequenceClassification,
                                                                                  WordPiece]:
    """(classifier, tokenizer) initialised from a Hugging Face BERT directory (encoder, pooler and a
    matching classifier when present) or an attnkit BERT run (its encoder and pooler; the classifier layer
    is new). ``from_scratch``: the same tokenizer and shape, random weights."""
    path = Path(init)
    if (path / "config.json").is_file():
        model, tok = load_bert(path, BERTForSequenceClassification, num_labels=n_labels)
        tok = _need_tokenizer(path, tok)
        config = model.config
    else:
        source = open_bert(path)
        tok, config = source.tokenizer, source.model.config
        model = BERTForSequenceClassification(config, n_labels)
        model.bert.load_state_dict(source.model.bert.state_dict(), strict=False)
    if from_scratch:
        model = BERTForSequenceClassification(config, n_labels)
    return model, tok


def classify_task(data: LabelledText, source: str | Path, labels: list[str], tok: WordPiece, config: BERTConfig,
                  max_length: int, holdout: float, split_seed: int, batch_size: int,
                  seed: int, grad_accum: int = 1, device: str | None = None) -> tuple[ClassifyTask, list[int]]:
    """The classification task of labelled sentences (``holdout`` of them, drawn with ``split_seed``, held
    out for evaluation) and the 0-based file lines of the sentences cut to ``max_length`` tokens.
    InputError naming ``source`` for labels outside ``labels``."""
    unknown = sorted({lab for lab in data.labels if lab not in labels})
    if unknown:
        raise InputError(f"{source}: labels {unknown} are not among the run's labels {labels}")
    y = [labels.index(lab) for lab in data.labels]
    enc = tok.encode(data.sentences, max_length=max_length)
    tr, te = holdout_split(len(data), holdout, split_seed)
    rows = max(min(batch_size, len(tr)), 1)
    length = max((len(enc.ids[i]) for i in tr), default=1)
    limits.check_training(config, rows, length, [limits.Option("batch_size", batch_size, 32),
                                                 limits.Option("max_length", max_length, 128)],
                          grad_accum=grad_accum, device=device, logit_positions=rows)
    task = ClassifyTask([enc.ids[i] for i in tr], [y[i] for i in tr], [enc.ids[i] for i in te], [y[i] for i in te],
                        tok, config, labels, batch_size=batch_size, seed=seed)
    return task, [data.line_numbers[i] - 1 for i in enc.truncated]


class ClassifierEval(NamedTuple):
    accuracy: float
    loss: float  # mean cross-entropy
    sentences: int


def evaluate_classifier(run: Run, tsv: str | Path, split: str = "test") -> ClassifierEval:
    """Accuracy of a classifier run on a ``label<TAB>sentence`` file: on the held-out ``test`` split as the
    run's training drew it (its --holdout and --split-seed), or on ``all`` rows."""
    model, tok, meta = run.model, run.tokenizer, run.meta
    extra = meta["train_config"]["extra"]
    data = read_tsv(tsv)
    labels = meta["labels"]
    bad = [f"line {n}: {lab!r}" for lab, n in zip(data.labels, data.line_numbers, strict=True) if lab not in labels]
    if bad:
        raise InputError(f"{tsv}: labels unknown to the model {labels}: " + "; ".join(bad[:5]))
    if split == "test":
        _, idx = holdout_split(len(data), float(extra.get("holdout", 0.1)), int(extra.get("split_seed", 0)))
        data = data.subset(idx)
        if len(data) == 0:
            raise InputError(f"{tsv}: the held-out test split is empty (too few rows); use --split all")
    limit = min(int(extra.get("max_length", 128)), model.config.max_len)
    ids = tok.encode(data.sentences, max_length=limit).ids
    y = [labels.index(lab) for lab in data.labels]
    preds, loss = predict(model, tok, ids, 64, y)
    return ClassifierEval(accuracy(preds, y), loss, len(y))


# ---------------------------------------------------------------------------------------------- inference
class Classifier(Embedder):
    """Sentence classification with a fine-tuned run (and, as every BERT, sentence embeddings)."""

    def __init__(self, model: BERTForSequenceClassification, tokenizer: WordPiece, labels: list[str],
                 max_length: int = 128) -> None:
        super().__init__(model, tokenizer)
        self.labels = labels
        self.max_length = min(max_length, model.config.max_len)

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Token ids cut to the run's maximum length (with the indices of truncated / [UNK] texts)."""
        return self.tokenizer.encode(texts, max_length=self.max_length)

    @torch.inference_mode()
    def classify_ids(self, ids: list[list[int]], batch_size: int = 64) -> list[tuple[str, float]]:
        """(label, probability) of the most likely class of each id list, in order."""
        out = []
        for s in range(0, len(ids), batch_size):
            x, attn = self.tokenizer.pad(ids[s : s + batch_size])
            probs = self.model(x, attn).logits.float().softmax(-1)  # (b, C)
            for p in probs:
                k = int(p.argmax())
                out.append((self.labels[k], float(p[k])))
        return out

    def classify(self, texts: Sequence[str], batch_size: int = 64) -> list[tuple[str, float]]:
        return self.classify_ids(self.encode(texts).ids, batch_size) if texts else []


# --------------------------------------------------------------------------------------------- loading
def load_run(run: str | Path, family: str | None = None) -> tuple[nn.Module, WordPiece, dict]:
    """(model in eval mode, tokenizer, metadata) of a BERT run directory (masked-LM or classifier; only
    ``family`` when given)."""
    meta = read_meta(run, family)
    family = meta.get("family")
    if family not in (MLM_FAMILY, CLASSIFY_FAMILY):
        raise CheckpointError(f"{run}: a {family!r} run, not a BERT run ({MLM_FAMILY} or {CLASSIFY_FAMILY})")
    config = BERTConfig.from_dict(meta["model_config"])
    if family == MLM_FAMILY:
        model: nn.Module = BERTForMaskedLM(config)
    else:
        model = BERTForSequenceClassification(config, len(meta["labels"]))
    load_model_weights(model, run, family)
    return model.eval(), WordPiece.from_dir(Path(run) / TOKENIZER_DIR), meta


def _open_run(path: Path, family: str) -> Run:
    model, tok, meta = load_run(path, family)
    if family == CLASSIFY_FAMILY:
        max_length = int(meta.get("train_config", {}).get("extra", {}).get("max_length", 128))
        return Run(family, path, model, tok, Classifier(model, tok, meta["labels"], max_length), meta)
    return Run(family, path, model, tok, Embedder(model, tok), meta)


@register_run_family(MLM_FAMILY)
def open_mlm_run(path: Path) -> Run:
    return _open_run(Path(path), MLM_FAMILY)


@register_run_family(CLASSIFY_FAMILY)
def open_classifier_run(path: Path) -> Run:
    return _open_run(Path(path), CLASSIFY_FAMILY)


def _need_tokenizer(path: Path, tok: WordPiece | None) -> WordPiece:
    if tok is None:
        raise CheckpointError(f"{path}: no tokenizer.json or vocab.txt")
    return tok


@register_hf_model_type("bert")
def open_bert_dir(path: Path) -> Run:
    """A Hugging Face BERT directory (BertModel or any Bert*-with-head checkpoint): its encoder."""
    path = Path(path)
    model, tok = load_bert(path, BERT)
    tok = _need_tokenizer(path, tok)
    return Run(HF_FAMILY, path, model, tok, Embedder(model, tok), read_config(path), source="huggingface")


def open_bert(path: str | Path, dtype: str = "fp32") -> Run:
    """Any BERT: a Hugging Face BERT directory or a BERT run (in ``dtype``: see
    :func:`attnkit.tasks.runs.open_run`); CheckpointError naming what it is otherwise."""
    run = open_run(path)
    if run.family not in (HF_FAMILY, MLM_FAMILY, CLASSIFY_FAMILY):
        if run.source == "huggingface":
            raise CheckpointError(f"{path}/config.json: model_type {run.meta.get('model_type')!r} is not a BERT "
                                  "model")
        raise CheckpointError(f"{path}: a {run.family!r} run, not a BERT run ({MLM_FAMILY} or {CLASSIFY_FAMILY})")
    return set_precision(run, dtype)
