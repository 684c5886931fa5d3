"""BERT's two training tasks for the shared loop (:func:`attnkit.training.train`), and loading their runs.

* :class:`MLMTask` (family ``bert-mlm``): masked-LM pre-training on lines of text, batches by tokens, each
  batch's corruption seeded by (seed, epoch, batch index) so resuming replays it exactly; evaluation
  reports the validation loss and masked-token accuracy on a fixed corruption of the validation lines.
* :class:`ClassifyTask` (family ``bert-classify``): sentence classification from the pooled [CLS] output;
  evaluation reports held-out loss and accuracy.
A run directory keeps its tokenizer in ``run/tokenizer/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.mlm import IGNORE, batch_generator, mask_tokens
from attnkit.data.resumable import epoch_rng, token_batches
from attnkit.errors import CheckpointError
from attnkit.evaluation.accuracy import accuracy
from attnkit.models.bert import BERT, BERTConfig, BERTForMaskedLM, BERTForSequenceClassification
from attnkit.tokenizers.wordpiece import WordPiece
from attnkit.training import load_model_weights, move_to, read_meta

MLM_FAMILY, CLASSIFY_FAMILY = "bert-mlm", "bert-classify"
TOKENIZER_DIR = "tokenizer"


@dataclass
class MLMBatch:
    input_ids: Tensor  # [B, T] corrupted
    attention_mask: Tensor  # [B, T] 1 = real token
    labels: Tensor  # [B, T] original ids at chosen positions, IGNORE elsewhere


class _LazyBatches(Sequence):
    """An epoch's batches, built when the loop asks for one (index lists are cheap, tensors are not)."""

    def __init__(self, groups: list[list[int]], build) -> None:  # noqa: ANN001
        self.groups, self.build = groups, build

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int):  # noqa: ANN204
        return self.build(i, self.groups[i])


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
        return _LazyBatches(
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
        self.tok.save(Path(run_dir) / TOKENIZER_DIR, self.config.max_positions)


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
        return _LazyBatches(groups, lambda i, g: self._batch(self.train_ids, self.train_labels, g))

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
        self.tok.save(Path(run_dir) / TOKENIZER_DIR, self.config.max_positions)


def predict(
    model: nn.Module, tok: WordPiece, ids: list[list[int]], batch_size: int = 64, labels: list[int] | None = None
) -> tuple[list[int], float]:
    """Predicted class of every sequence (length-sorted batches) and the mean loss if ``labels`` are given."""
    order = sorted(range(len(ids)), key=lambda j: len(ids[j]))
    preds = [0] * len(ids)
    total = 0.0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            group = order[s : s + batch_size]
            x, attn = tok.pad([ids[j] for j in group])
            logits = model(x.to(device), attn.to(device)).logits.float().cpu()  # (b, C)
            for j, p in zip(group, logits.argmax(-1).tolist(), strict=True):
                preds[j] = p
            if labels is not None:
                total += float(F.cross_entropy(logits, torch.tensor([labels[j] for j in group]), reduction="sum"))
    return preds, total / max(len(ids), 1)


# --------------------------------------------------------------------------------------------- loading
def load_run(run: str | Path) -> tuple[nn.Module, WordPiece, dict]:
    """(model in eval mode, tokenizer, metadata) of a BERT run directory (masked-LM or classifier)."""
    meta = read_meta(run)
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


def load_encoder(path: str | Path) -> tuple[BERT, WordPiece]:
    """A BERT encoder and its tokenizer from a Hugging Face directory (config.json) or an attnkit run."""
    path = Path(path)
    if (path / "config.json").is_file():
        return BERT.from_hf(path), WordPiece.from_dir(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such model directory or run")
    model, tok, _ = load_run(path)
    return model.bert, tok
