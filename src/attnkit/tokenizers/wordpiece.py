"""WordPiece (BERT's sub-word vocabulary) through the Hugging Face ``tokenizers`` library.

Loads a checkpoint's ``tokenizer.json`` (exactly Hugging Face's fast tokenizer) or ``vocab.txt`` (+
``tokenizer_config.json`` for lower-casing), trains a new vocabulary on text, and encodes sentences as
``[CLS] pieces [SEP]``, truncated to a model's maximum length with the final [SEP] kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.processors import BertProcessing
from torch import Tensor

from attnkit.data.batching import pad_sequences
from attnkit.errors import CheckpointError, InputError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class Encoded(NamedTuple):
    ids: list[list[int]]  # one list of token ids per text, [CLS] ... [SEP]
    truncated: list[int]  # indices of the texts that were cut to max_length
    unknown: list[int]  # indices of the texts containing a piece mapped to [UNK]


class WordPiece:
    """A BERT tokenizer: ``encode`` texts into ``[CLS] ... [SEP]`` ids; ``pad`` them into a batch."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise CheckpointError(f"the WordPiece vocabulary lacks the special tokens {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in SPECIALS)
        self.special_ids = sorted(ids.values())
        if tokenizer.post_processor is None:
            tokenizer.post_processor = BertProcessing(("[SEP]", self.sep_id), ("[CLS]", self.cls_id))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    # ----------------------------------------------------------------------------------- loading, saving
    @classmethod
    def from_dir(cls, path: str | Path) -> WordPiece:
        """From a checkpoint directory: ``tokenizer.json`` if present, else ``vocab.txt``."""
        path = Path(path)
        tj, vocab = path / "tokenizer.json", path / "vocab.txt"
        if not tj.is_file() and not vocab.is_file():
            raise CheckpointError(f"{path}: no tokenizer.json or vocab.txt")
        try:
            if tj.is_file():
                tok = Tokenizer.from_file(str(tj))
            else:
                lower, strip = True, None
                cfg = path / "tokenizer_config.json"
                if cfg.is_file():
                    c = json.loads(cfg.read_text(encoding="utf-8"))
                    lower, strip = bool(c.get("do_lower_case", True)), c.get("strip_accents")
                tok = BertWordPieceTokenizer(str(vocab), lowercase=lower, strip_accents=strip)._tokenizer
        except Exception as exc:  # the Rust library raises plain Exception for a malformed file
            raise CheckpointError(f"{path}: cannot read the tokenizer ({exc})") from None
        return cls(tok)

    @classmethod
    def train(
        cls, lines: Iterable[str], vocab_size: int = 8000, *, lowercase: bool = True, min_frequency: int = 2
    ) -> WordPiece:
        """Learn a WordPiece vocabulary of at most ``vocab_size`` pieces (specials included) from text."""
        wp = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None)
        wp.train_from_iterator(
            lines, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS),
            show_progress=False,
        )
        # The library numbers pieces in hash-map order (different in every process); a WordPiece
        # vocabulary is a set looked up greedily, so renumbering (specials, then sorted) changes nothing
        # but the ids. Ties at the size cut-off can still pick other pieces in another process: a run
        # keeps its tokenizer (resumes are exact), and ``mlm train --tokenizer`` reuses one.
        pieces = list(SPECIALS) + sorted(t for t in wp.get_vocab() if t not in SPECIALS)
        vocab = {t: i for i, t in enumerate(pieces)}
        return cls(BertWordPieceTokenizer(vocab, lowercase=lowercase, strip_accents=None)._tokenizer)

    def save(self, path: str | Path, model_max_length: int = 512) -> None:
        """Write ``tokenizer.json``, ``vocab.txt`` and a ``tokenizer_config.json`` that transformers reads."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path / "tokenizer.json"))
        vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        (path / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
        normalizer = json.loads(self.tokenizer.to_str()).get("normalizer") or {}
        config = {
            "tokenizer_class": "BertTokenizer", "do_lower_case": bool(normalizer.get("lowercase", True)),
            "model_max_length": model_max_length, "unk_token": "[UNK]", "sep_token": "[SEP]",
            "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
        }
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    # ------------------------------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str], max_length: int | None = None) -> Encoded:
        """``[CLS] pieces [SEP]`` per text; a text longer than ``max_length`` tokens keeps its first
        ``max_length - 1`` tokens and the [SEP]."""
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        ids, truncated, unknown = [], [], []
        for i, enc in enumerate(self.tokenizer.encode_batch(list(texts))):
            seq = enc.ids
            if max_length is not None and len(seq) > max_length:
                seq = seq[: max_length - 1] + [self.sep_id]
                truncated.append(i)
            if self.unk_id in seq:
                unknown.append(i)
            ids.append(seq)
        return Encoded(ids, truncated, unknown)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def pad(self, seqs: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Right-pad id lists into input_ids [B, T] (pad id) and attention_mask [B, T] (1 = real token)."""
        if not seqs:
            raise InputError("cannot build a batch from no sequences")
        ids = pad_sequences(seqs, self.pad_id)
        lengths = torch.tensor([len(s) for s in seqs])
        mask = (torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).long()  # (B, T)
        return ids, mask
