"""`attnkit demo`: the dates corpus, and the command end to end (tiny here; the full run is `slow`)."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

import pytest

from attnkit.cli.main import main
from attnkit.data.dates import dates_corpus, number_words, ordinal_words, write_date, year_words

_WORDS = {w: i for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                      "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                                      "sixteen", "seventeen", "eighteen", "nineteen"])}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}


def _parse_number(words: str) -> int:
    total = 0
    for part in words.split("-"):
        total += _TENS.get(part, _WORDS.get(part, 0))
    return total


def test_number_words_roundtrip() -> None:
    for n in range(100):
        assert _parse_number(number_words(n)) == n
    assert [ordinal_words(n) for n in (1, 2, 3, 11, 12, 20, 22, 31)] == [
        "first", "second", "third", "eleventh", "twelfth", "twentieth", "twenty-second", "thirty-first"]
    rng = random.Random(0)
    assert year_words(1999, rng) == "nineteen ninety-nine"
    assert year_words(1905, rng) == "nineteen oh five"
    assert year_words(2000, rng) == "two thousand"


def test_corpus_is_consistent_and_held_out() -> None:
    test = dates_corpus(200, seed=1)
    train = dates_corpus(2000, seed=0, exclude=set(test.tgt))
    assert not set(train.tgt) & set(test.tgt)
    for src, iso in zip(train.src, train.tgt, strict=True):
        d = dt.date.fromisoformat(iso)
        # Every spelling names the month and, in digits or words, the day.
        assert d.strftime("%B")[:3].lower() in src.lower()
        assert str(d.day) in re.findall(r"\d+", src) or ordinal_words(d.day) in src
    assert dates_corpus(50, seed=3).src == dates_corpus(50, seed=3).src
    assert write_date(dt.date(2024, 2, 29), random.Random(0))


def test_demo_end_to_end_tiny(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--train-size", "400", "--test-size", "10", "--steps", "4",
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "held-out exact match" in text and "sample translations" in text
    png = out / "attention.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Running again replaces the earlier demo; a directory that is not a demo run is refused.
    assert main(["demo", "--out", str(out), "--train-size", "100", "--test-size", "5", "--steps", "1",
                 "--quiet"]) == 0
    other = tmp_path / "precious"
    other.mkdir()
    assert main(["demo", "--out", str(other), "--steps", "1", "--quiet"]) == 2
    assert "not an earlier demo" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_reaches_99_percent(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    text = capsys.readouterr().out
    accuracy = float(re.search(r"held-out exact match: ([\d.]+)%", text).group(1))
    assert accuracy >= 99.0
