"""Character-level tokenizer (one token per Unicode character) and :class:`TextTokenizer`, the wrapper of a
Hugging Face ``tokenizers.Tokenizer`` that the language-model code uses for every kind of tokenizer.

The character tokenizer is a ``WordLevel`` model whose pre-tokenizer splits the text into single
characters and whose decoder fuses them back, so it is saved and loaded as an ordinary ``tokenizer.json``.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from attnkit.errors import CheckpointError, InputError

TOKENIZER_FILE = "tokenizer.json"
EOS_TOKENS = ("<|endoftext|>", "</s>", "[SEP]")


class TextTokenizer:
    """Text <-> token ids through a ``tokenizers.Tokenizer``, with user-facing errors.

    ``kind`` is "char" (WordLevel over characters: text with characters outside the vocabulary is
    rejected with an InputError naming them) or "bpe" (byte-level BPE: any text is representable)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        model = type(tokenizer.model).__name__
        self.kind = {"WordLevel": "char", "BPE": "bpe"}.get(model, model.lower())
        self._vocab = tokenizer.get_vocab() if self.kind == "char" else None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-text token (GPT-2's ``<|endoftext|>``), or None when there is none."""
        for token in EOS_TOKENS:
            i = self.tokenizer.token_to_id(token)
            if i is not None:
                return i
        return None

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The tokens that end a generation: the end-of-text token, if there is one."""
        return () if self.eos_id is None else (self.eos_id,)

    def encode(self, text: str) -> list[int]:
        """text -> token ids [N]; InputError if the tokenizer cannot represent the text."""
        if self._vocab is not None:
            missing = sorted(set(text) - set(self._vocab))
            if missing:
                shown = "".join(missing[:20])
                raise InputError(
                    f"the text has {len(missing)} character(s) the tokenizer does not know: {shown!r}"
                )
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        """token ids -> text."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        """The tokenizer saved in ``directory`` (its tokenizer.json)."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing tokenizer file")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # the Rust library raises plain Exception
            raise CheckpointError(f"{path}: not a readable tokenizer ({exc})") from None


def train_char_tokenizer(text: str) -> TextTokenizer:
    """A character tokenizer whose vocabulary is the sorted set of characters in ``text``."""
    if not text:
        raise InputError("cannot build a character vocabulary from empty text")
    vocab = {c: i for i, c in enumerate(sorted(set(text)))}
    tok = Tokenizer(models.WordLevel(vocab))
    # [\s\S] matches every character, newlines included: one token per character.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return TextTokenizer(tok)
