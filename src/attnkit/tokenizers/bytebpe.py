"""Byte-level BPE (GPT-2's tokenizer): trained with the ``tokenizers`` library, or loaded from a GPT-2
checkpoint's ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``.

Byte-level means the base alphabet is the 256 bytes, so every UTF-8 text is representable; merges
learned from the corpus then join frequent byte sequences into single tokens.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from attnkit.errors import CheckpointError, InputError
from attnkit.tokenizers.char import TOKENIZER_FILE, TextTokenizer

END_OF_TEXT = "<|endoftext|>"


def _byte_level(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bytebpe(texts: list[str], vocab_size: int = 512, min_frequency: int = 2) -> TextTokenizer:
    """Train a byte-level BPE on ``texts`` with ``vocab_size`` tokens (256 bytes + merges +
    ``<|endoftext|>``)."""
    if not any(texts):
        raise InputError("cannot train a BPE tokenizer on empty text")
    if vocab_size < 257:
        raise ValueError(f"a byte-level BPE needs vocab_size >= 257 (256 bytes + end of text), got {vocab_size}")
    tok = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return TextTokenizer(tok)


def load_gpt2_tokenizer(directory: str | Path) -> TextTokenizer | None:
    """The tokenizer of a GPT-2 checkpoint directory: tokenizer.json, else vocab.json + merges.txt,
    else None (a directory with weights only)."""
    directory = Path(directory)
    if (directory / TOKENIZER_FILE).is_file():
        return TextTokenizer.load(directory)
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if vocab.is_file() and merges.is_file():
        try:
            tok = _byte_level(models.BPE.from_file(str(vocab), str(merges)))
        except Exception as exc:  # the Rust library raises plain Exception
            raise CheckpointError(f"{directory}: unreadable vocab.json/merges.txt ({exc})") from None
        if tok.token_to_id(END_OF_TEXT) is not None:
            tok.add_special_tokens([END_OF_TEXT])  # as GPT-2's tokenizer: never split, matched in text
        return TextTokenizer(tok)
    return None


def save_gpt2_tokenizer(tokenizer: TextTokenizer, directory: str | Path) -> None:
    """Write tokenizer.json (and, for BPE, GPT-2's vocab.json + merges.txt) into ``directory``."""
    tokenizer.save(directory)
    if tokenizer.kind == "bpe":
        tokenizer.tokenizer.model.save(str(directory))
