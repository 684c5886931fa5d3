"""Subword (BPE) tokenization for translation, trained on the training data with Hugging Face `tokenizers`.

Text is NFKC-normalised and split on whitespace SentencePiece-style (``Metaspace``: a word starts with
"▁"), so decoding gives back the detokenized sentence exactly, which is what sacreBLEU must score. One
joint vocabulary serves both languages (so the embeddings can be shared) or one per language. Special
tokens have fixed ids: <pad>=0, <s>=1 (BOS), </s>=2 (EOS), <unk>=3.

BPE-dropout (Provilkov et al., 2020; subword regularisation for training): :meth:`SubwordTokenizer.sample_batch`
encodes with each merge skipped with probability ``dropout``, so a word gets another, finer segmentation
from time to time; that is the BPE model's own ``dropout`` in `tokenizers`, on a copy of the tokenizer.
`tokenizers` draws those skips from an unseeded generator, so a sample cannot be drawn again: a training
task that uses it keeps each epoch's sample in a file (:mod:`attnkit.training.subword_samples`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from attnkit.errors import CheckpointError

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


class SubwordTokenizer:
    """A BPE tokenizer: ``encode(text) -> ids`` (no BOS/EOS), ``decode(ids) -> text`` (specials dropped)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._sampler: tuple[float, Tokenizer] | None = None  # (dropout, a copy with that BPE-dropout)
        for i, tok in enumerate(SPECIALS):
            if tokenizer.token_to_id(tok) != i:
                raise CheckpointError(f"tokenizer has {tok!r} at id {tokenizer.token_to_id(tok)}, expected {i}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> SubwordTokenizer:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(SPECIALS), show_progress=False)
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def sample_batch(self, texts: Sequence[str], dropout: float) -> list[list[int]]:
        """Like :meth:`encode_batch`, with BPE-dropout: every merge is skipped with probability ``dropout``
        in [0, 1) (0: the usual segmentation). Each call draws new segmentations; all decode to the text
        that :meth:`encode_batch`'s ids decode to."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"BPE-dropout must be in [0, 1), got {dropout}")
        if dropout == 0.0:
            return self.encode_batch(texts)
        if not isinstance(self.tokenizer.model, models.BPE):
            raise ValueError(f"BPE-dropout needs a BPE model, this tokenizer has {type(self.tokenizer.model).__name__}")
        if self._sampler is None or self._sampler[0] != dropout:
            copy = Tokenizer.from_str(self.tokenizer.to_str())
            copy.model.dropout = dropout
            self._sampler = (dropout, copy)
        return [e.ids for e in self._sampler[1].encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.decode_batch([list(ids) for ids in batch], skip_special_tokens=True)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.id_to_token(i) for i in ids]

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        try:
            return cls(Tokenizer.from_file(str(path)))
        except CheckpointError:
            raise
        except Exception as exc:  # tokenizers raises a bare Exception on a missing/corrupt file
            raise CheckpointError(f"cannot read tokenizer {path}: {exc}") from None


def tokenizer_files(src: str, tgt: str, joint: bool) -> tuple[str, str]:
    """File names inside a run directory of the source and target tokenizers."""
    return ("tokenizer.json", "tokenizer.json") if joint else (f"tokenizer.{src}.json", f"tokenizer.{tgt}.json")
