"""Parallel corpus readers and the Multi30k download code (exercised with file:// URLs, no network)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from attnkit.data.parallel import download_multi30k, read_lines, read_parallel, resolve_data
from attnkit.errors import InputError

MULTI30K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "multi30k"


def _write(path: Path, lines: list[str], gz: bool = False) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_plain_and_gz_files(tmp_path: Path) -> None:
    _write(tmp_path / "train.de", ["Ein Hund.", "Zwei Katzen."])
    _write(tmp_path / "train.en.gz", ["A dog.", "Two cats."], gz=True)
    c = read_parallel(tmp_path, "train", "de", "en")
    assert c.src == ["Ein Hund.", "Zwei Katzen."] and c.tgt == ["A dog.", "Two cats."]
    assert len(c) == 2


def test_empty_lines_and_crlf_kept_aligned(tmp_path: Path) -> None:
    (tmp_path / "x.de").write_bytes(b"a\r\n\r\nc\r\n")
    assert read_lines(tmp_path / "x.de") == ["a", "", "c"]


def test_errors(tmp_path: Path) -> None:
    _write(tmp_path / "train.de", ["a", "b"])
    _write(tmp_path / "train.en", ["a"])
    with pytest.raises(InputError, match="not parallel"):
        read_parallel(tmp_path, "train", "de", "en")
    with pytest.raises(InputError, match="missing data file"):
        read_parallel(tmp_path, "val", "de", "en")
    (tmp_path / "bad.de").write_bytes(b"\xff\xfe abc\n")
    with pytest.raises(InputError, match=r"bad.de is not valid UTF-8 \(line 1: invalid start byte at byte 0\)"):
        read_lines(tmp_path / "bad.de")
    (tmp_path / "bad.en.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot read"):
        read_lines(tmp_path / "bad.en.gz")
    with pytest.raises(InputError, match="no such directory"):
        resolve_data(str(tmp_path / "nope"))


def test_real_multi30k() -> None:
    c = read_parallel(MULTI30K, "test_2016_flickr", "de", "en")
    assert len(c) == 1000
    assert c.tgt[0] and c.src[0] != c.tgt[0]


def test_download_from_url_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        for lang, text in (("de", "Hallo"), ("en", "Hello")):
            _write(mirror / f"{split}.{lang}.gz", [f"{text} {split}"], gz=True)
    url = mirror.as_uri() + "/{split}.{lang}.gz"
    monkeypatch.setenv("ATTNKIT_CACHE", str(tmp_path / "cache"))
    data = resolve_data("multi30k", ("de", "en"), url=url)
    assert data == tmp_path / "cache" / "multi30k"
    assert read_parallel(data, "val", "de", "en").tgt == ["Hello val"]
    # Present files are not fetched again; a missing one is reported as an error, with no partial file.
    (mirror / "train.en.gz").unlink()
    again = download_multi30k(data, url=url)
    assert again == data
    with pytest.raises(InputError, match="cannot download"):
        download_multi30k(tmp_path / "other", url=url)
    assert not list((tmp_path / "other").glob("*.part"))
