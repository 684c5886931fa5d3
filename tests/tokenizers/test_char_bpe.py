"""Character and byte-level BPE tokenizers (through the `tokenizers` library): exact round trips, unknown
characters, saving, and byte-level BPE ids equal to transformers' GPT-2 tokenizer on the same files."""

from __future__ import annotations

import pytest
import transformers

from attnkit.errors import CheckpointError, InputError
from attnkit.tokenizers.bytebpe import END_OF_TEXT, load_gpt2_tokenizer, save_gpt2_tokenizer, train_bytebpe
from attnkit.tokenizers.char import TextTokenizer, train_char_tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  All:\tSpeak, speak. Ünï 日本\r\n"


def test_char_tokenizer_one_token_per_character_round_trip(tmp_path) -> None:
    tok = train_char_tokenizer(TEXT)
    assert tok.kind == "char" and tok.vocab_size == len(set(TEXT))
    ids = tok.encode(TEXT)
    assert len(ids) == len(TEXT)
    vocab = sorted(set(TEXT))
    assert ids == [vocab.index(c) for c in TEXT]  # ids are the sorted-character indices (nanoGPT's)
    assert tok.decode(ids) == TEXT
    tok.save(tmp_path)
    again = TextTokenizer.load(tmp_path)
    assert again.kind == "char" and again.encode(TEXT) == ids and again.decode(ids) == TEXT
    assert tok.eos_id is None


def test_char_tokenizer_rejects_unknown_characters() -> None:
    tok = train_char_tokenizer("abc")
    with pytest.raises(InputError, match="2 character.*'xz'"):
        tok.encode("axbz")
    with pytest.raises(InputError, match="empty"):
        train_char_tokenizer("")


def test_bytebpe_round_trips_any_text_and_learns_merges() -> None:
    corpus = [TEXT * 5, "the theory of the thing " * 50]
    tok = train_bytebpe(corpus, vocab_size=320)
    assert tok.kind == "bpe" and tok.vocab_size <= 320
    assert tok.eos_id is not None and tok.encode(END_OF_TEXT) == [tok.eos_id]
    for text in [TEXT, "never seen: ∑ 🙂 \x00 ok", " the the the"]:
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("the theory of the thing")) < len(b"the theory of the thing")


def test_bytebpe_files_match_transformers_gpt2_tokenizer(tmp_path) -> None:
    tok = train_bytebpe([TEXT * 20], vocab_size=300)
    save_gpt2_tokenizer(tok, tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    classic = load_gpt2_tokenizer(tmp_path)
    hf = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    for text in [TEXT, "Speak, speak!  \n\n", f"a{END_OF_TEXT}b"]:
        assert classic.encode(text) == tok.encode(text) == hf(text)["input_ids"]


def test_loading_bad_tokenizer_files(tmp_path) -> None:
    assert load_gpt2_tokenizer(tmp_path) is None
    with pytest.raises(CheckpointError, match="missing tokenizer"):
        TextTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable tokenizer"):
        TextTokenizer.load(tmp_path)
    with pytest.raises(InputError):
        train_bytebpe([""], vocab_size=300)
