"""Word alignments from cross-attention (attnkit.decoding.align): words of SentencePiece-style tokens, the
token -> word pooling, Pharaoh pairs; and (slow) the dates demo model, whose alignments must point each ISO
digit group at the source words the generator wrote it from (>= 90% agreement)."""

from __future__ import annotations

import datetime as dt
import random

import pytest
import torch

from attnkit.data.dates import spell_date
from attnkit.decoding.align import format_pharaoh, pharaoh, word_ids, word_weights


def test_word_ids_follow_word_start_marks_and_skip_specials() -> None:
    tokens = ["▁A", "▁dog", "gy", "▁runs", "</s>"]
    assert word_ids(tokens, [False, False, False, False, True]) == [0, 1, 1, 2, -1]
    assert word_ids(["x", "▁y"], [False, False]) == [0, 1]  # a first token without the mark starts word 0


def test_word_weights_average_target_rows_and_sum_source_columns() -> None:
    w = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])  # (T=3, S=3)
    got = word_weights(w, [0, 0, 1], [0, 0, -1])  # source words {0, 1}, {2}; target word {0, 1}, special
    torch.testing.assert_close(got, torch.tensor([[(0.7 + 0.75) / 2, (0.3 + 0.25) / 2]]))
    assert pharaoh(w, [0, 1, 2], [0, 1, 2]) == [(1, 0), (0, 1), (2, 2)]
    assert format_pharaoh([(1, 0), (0, 1)]) == "1-0 0-1"


def test_spell_date_parts_name_the_words() -> None:
    rng = random.Random(0)
    for _ in range(300):
        d = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(0, 36000))
        text, parts = spell_date(d, rng)
        words = text.split()
        assert sorted(i for p in parts.values() for i in p) == sorted(set(i for p in parts.values() for i in p))
        assert any(d.strftime("%B")[:3].lower() in words[i].lower() for i in parts["month"])


@pytest.mark.slow
def test_alignments_of_the_dates_demo_model_follow_the_generator(tmp_path) -> None:
    """About 3 minutes on 2 busy cores (docs/pretrained-translation.md has the figures per layer)."""
    from attnkit.tasks.demo import dates_demo
    from attnkit.training import train

    demo = dates_demo(20000, 10, 600, 900, 0, quiet=True)
    torch.manual_seed(0)
    train(demo.task, demo.model, demo.train_config, tmp_path)
    translator = demo.translator(tmp_path)
    agreement = date_alignment_agreement(translator, 200)
    assert agreement >= 0.9, agreement


def date_alignment_agreement(translator, n: int, layer: int = -2, seed: int = 123) -> float:  # noqa: ANN001
    """The share of ISO digit groups (year, month, day) of correct translations whose most attended source
    word is one the generator spelled that part with."""
    rng = random.Random(seed)
    first, last = dt.date(1900, 1, 1).toordinal(), dt.date(2099, 12, 31).toordinal()
    cases = [(d, *spell_date(d, rng)) for d in (dt.date.fromordinal(rng.randint(first, last)) for _ in range(n))]
    ok = total = 0
    for (d, _, parts), a in zip(cases, translator.align([c[1] for c in cases], layer=layer), strict=True):
        if a.text != d.isoformat():
            continue
        src = word_ids(a.src_tokens, [False] * len(a.src_tokens))
        groups, pos = [], 0  # target characters -> 0 year, 1 month, 2 day, -1 for "▁" and "-"
        for tok in a.tgt_tokens:
            c = tok.replace("▁", "")
            groups.append(-1 if c in ("", "-") else (0 if pos < 4 else 1 if pos < 7 else 2))
            pos += len(c)
        w = word_weights(a.weights, src, groups)
        for g, name in enumerate(("year", "month", "day")):
            total += 1
            ok += int(w[g].argmax()) in parts[name]
    return ok / max(total, 1)
