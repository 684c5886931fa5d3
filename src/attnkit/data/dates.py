"""A synthetic parallel corpus for the demo: dates written out in many formats -> ISO dates.

    "Tuesday, the twenty-third of March, nineteen ninety-nine"  ->  "1999-03-23"
    "23 Mar 1999"                                               ->  "1999-03-23"

Generated in code (no external data), deterministic for a seed. Learning it needs real attention: the
day, month and year can appear in any order and spelling, and each target digit aligns with a source word.
"""

from __future__ import annotations

import datetime as dt
import random

from attnkit.data.parallel import ParallelCorpus

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
       "twelve": "twelfth"}


def number_words(n: int) -> str:
    """0..99 in words: 23 -> 'twenty-three'."""
    if n < 20:
        return ONES[n]
    return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])


def ordinal_words(n: int) -> str:
    """1..31 as an ordinal: 23 -> 'twenty-third', 20 -> 'twentieth'."""
    words = number_words(n)
    head, _, last = words.rpartition("-")
    if last in ORD:
        last = ORD[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return f"{head}-{last}" if head else last


def ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}" + {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def year_words(y: int, rng: random.Random) -> str:
    """1999 -> 'nineteen ninety-nine'; 2005 -> 'two thousand five' / 'two thousand and five'; 1905 ->
    'nineteen oh five'; 2021 -> 'twenty twenty-one' or 'two thousand twenty-one'."""
    hi, lo = divmod(y, 100)
    if y % 1000 < 100 and (y >= 2000 or lo == 0) and (lo < 10 or rng.random() < 0.5):
        rest = y % 1000
        if rest == 0:
            return "two thousand" if y == 2000 else number_words(hi) + " hundred"
        return "two thousand " + rng.choice(["", "and "]) + number_words(rest)
    if lo == 0:
        return number_words(hi) + " hundred"
    if lo < 10:
        return number_words(hi) + " oh " + ONES[lo]
    return number_words(hi) + " " + number_words(lo)


def _month(m: int, rng: random.Random) -> str:
    name = MONTHS[m - 1]
    return rng.choice([name, name, name[:3], name.lower()])


def write_date(d: dt.date, rng: random.Random) -> str:
    """One random spelling of a date."""
    return spell_date(d, rng)[0]


def spell_date(d: dt.date, rng: random.Random) -> tuple[str, dict[str, list[int]]]:
    """One random spelling of a date and where its parts are: {"year" | "month" | "day": the indices of the
    whitespace-separated words that spell it} (the reference of the alignment tests)."""
    mon, day, year = _month(d.month, rng), d.day, d.year
    day_word, year_word = ordinal_words(day), year_words(year, rng)
    dw, yw, sd = ("D", day_word), ("Y", year_word), ("D", ordinal_suffix(day))
    formats = [  # (word, part) pieces; "" = no part (of, the)
        [dw, ("", "of"), ("M", mon), yw],
        [("", "the"), dw, ("", "of"), ("M", mon + ","), yw],
        [("M", mon), ("D", day_word + ","), yw],
        [("M", mon), ("", "the"), dw, yw],
        [("M", mon), ("D", f"{day},"), ("Y", str(year))],
        [("D", str(day)), ("M", mon), ("Y", str(year))],
        [sd, ("M", mon), ("Y", str(year))],
        [("", "the"), sd, ("", "of"), ("M", mon), ("Y", str(year))],
        [("M", mon), ("D", ordinal_suffix(day) + ","), yw],
        [("Y", str(year)), ("M", mon), ("D", str(day))],
        [dw, ("M", mon), ("Y", str(year))],
    ]
    pieces = rng.choice(formats)
    if rng.random() < 0.25:
        pieces = [("", f"{WEEKDAYS[d.weekday()]},"), *pieces]
    parts: dict[str, list[int]] = {"year": [], "month": [], "day": []}
    words: list[str] = []
    for part, text in pieces:
        n = len(text.split())
        if part:
            parts[{"Y": "year", "M": "month", "D": "day"}[part]] += range(len(words), len(words) + n)
        words += text.split()
    return " ".join(words), parts


def dates_corpus(n: int, seed: int = 0, start: int = 1900, end: int = 2099,
                 exclude: set[str] | None = None) -> ParallelCorpus:
    """``n`` pairs (written date, ISO date) with dates uniform in [start, end]; dates in ``exclude`` (ISO)
    are skipped, so a held-out set can use dates never seen in training."""
    rng = random.Random(seed)
    first, last = dt.date(start, 1, 1).toordinal(), dt.date(end, 12, 31).toordinal()
    src, tgt = [], []
    while len(src) < n:
        d = dt.date.fromordinal(rng.randint(first, last))
        iso = d.isoformat()
        if exclude and iso in exclude:
            continue
        src.append(write_date(d, rng))
        tgt.append(iso)
    return ParallelCorpus(src, tgt)
