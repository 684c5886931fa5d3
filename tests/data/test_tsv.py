"""label<TAB>sentence reading (malformed rows reported by line number) and the fixed held-out split."""

from __future__ import annotations

import pytest

from attnkit.data.tsv import holdout_split, read_lines, read_tsv
from attnkit.errors import InputError


def test_reads_rows_and_skips_header_and_blank_lines(tmp_path) -> None:
    p = tmp_path / "d.tsv"
    p.write_text("label\tsentence\n1\tgood film\n\n0\t bad film \n", encoding="utf-8")
    d = read_tsv(p)
    assert d.labels == ["1", "0"] and d.sentences == ["good film", "bad film"] and d.line_numbers == [2, 4]


def test_reversed_header_columns(tmp_path) -> None:
    p = tmp_path / "d.tsv"
    p.write_text("sentence\tlabel\ngood\tpos\n", encoding="utf-8")
    d = read_tsv(p)
    assert d.labels == ["pos"] and d.sentences == ["good"]


def test_malformed_rows_are_reported_by_line_number(tmp_path) -> None:
    p = tmp_path / "d.tsv"
    p.write_text("1\tok\nno tab here\n0\t\n1\ta\tb\n\tno label\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_tsv(p)
    msg = str(err.value)
    for expected in ("4 malformed", "line 2: expected 2", "line 3: empty sentence", "line 4: expected 2 tab",
                     "line 5: empty label"):
        assert expected in msg


def test_invalid_utf8_missing_and_empty_files(tmp_path) -> None:
    p = tmp_path / "d.tsv"
    p.write_bytes(b"1\tfine\n0\tbad \xff byte\n")
    with pytest.raises(InputError, match=r"d.tsv is not valid UTF-8 \(line 2: invalid start byte at byte 13\)"):
        read_tsv(p)
    with pytest.raises(InputError, match="cannot read"):
        read_lines(tmp_path / "missing.txt")
    (tmp_path / "e.tsv").write_text("label\tsentence\n")
    with pytest.raises(InputError, match="no labelled sentences"):
        read_tsv(tmp_path / "e.tsv")


def test_holdout_split_is_fixed_disjoint_and_complete() -> None:
    tr, te = holdout_split(1000, 0.1, seed=0)
    assert len(te) == 100 and len(tr) == 900
    assert sorted(tr + te) == list(range(1000))
    assert holdout_split(1000, 0.1, seed=0) == (tr, te)
    assert holdout_split(1000, 0.1, seed=1)[1] != te
    with pytest.raises(ValueError):
        holdout_split(10, 1.5)
