"""Streaming generation (issue 15): TextStream's pieces joined are the whole decode, for every tokenizer kind
and any token sequence (including byte-level tokens that are parts of UTF-8 characters or invalid bytes);
stream_text gives the same text as generate_text, piece by piece."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.decoding.generate import GenerationConfig, generate_text, stream_text
from attnkit.decoding.textstream import TextStream
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.tokenizers.bytebpe import train_bytebpe
from attnkit.tokenizers.char import train_char_tokenizer

TEXT = "the dog runs under the tree. 日本語のテキスト, émigré café — ü ß 🙂 and more text\n" * 3


@pytest.fixture(scope="module")
def tokenizers() -> dict:
    return {"bytebpe": train_bytebpe([TEXT], 300), "char": train_char_tokenizer(TEXT)}


def _streamed(decode, ids: list[int]) -> str:  # noqa: ANN001
    stream = TextStream(decode)
    return "".join(stream.push(i) for i in ids) + stream.flush()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_pieces_join_to_the_whole_decode(tokenizers, data) -> None:  # noqa: ANN001
    tok = tokenizers[data.draw(st.sampled_from(sorted(tokenizers)))]
    invalid = [i for i in range(tok.vocab_size) if "\ufffd" in tok.decode([i])]  # bytes >= 0x80 alone
    token = st.integers(0, tok.vocab_size - 1)
    if invalid:
        token = st.one_of(token, st.sampled_from(invalid))  # many partial characters and invalid runs
    ids = data.draw(st.lists(token, max_size=120))
    assert _streamed(tok.decode, ids) == tok.decode(ids)


def test_a_character_split_over_tokens_waits_for_its_last_byte(tokenizers) -> None:
    tok = tokenizers["bytebpe"]
    byte_ids = [tok.tokenizer.token_to_id(c) for c in "æĹ¥"]  # the byte-level symbols of "日" (e6 97 a5)
    stream = TextStream(tok.decode)
    assert [stream.push(i) for i in byte_ids] == ["", "", "日"]


def test_long_invalid_runs_stay_cheap(tokenizers) -> None:
    tok = tokenizers["bytebpe"]
    bad = next(i for i in range(tok.vocab_size) if tok.decode([i]) == "\ufffd")
    stream = TextStream(tok.decode)
    out = "".join(stream.push(bad) for _ in range(5000)) + stream.flush()
    assert out == tok.decode([bad] * 5000) and len(stream.window) <= 40


@pytest.mark.parametrize(("temperature", "context"), [(1.0, None), (0.0, 16), (1.3, 16)])
def test_stream_text_gives_generate_texts(tokenizers, temperature: float, context: int | None) -> None:
    tok = tokenizers["bytebpe"]
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=tok.vocab_size, max_len=16)).eval()
    cfg = GenerationConfig(max_new_tokens=40 if context else 12, temperature=temperature, seed=3,
                           stop_tokens=tok.stop_ids)
    prompts = ["the dog", "日本", "x"]
    expected = generate_text(model, tok, prompts, cfg, context=context)
    pieces: list[list[str]] = [[] for _ in prompts]
    ends: list[int] = []

    def on_text(row: int, piece: str, finished: bool) -> None:
        assert row not in ends
        pieces[row].append(piece)
        if finished:
            ends.append(row)

    stream_text(model, tok, prompts, cfg, on_text, context=context)
    assert ["".join(p) for p in pieces] == expected and sorted(ends) == [0, 1, 2]
