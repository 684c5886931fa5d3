"""Parallel corpora for translation: Multi30k or any pair of aligned text files.

A corpus directory holds ``{split}.{lang}`` or ``{split}.{lang}.gz`` files with one sentence per line
(Multi30k: splits ``train``, ``val``, ``test_2016_flickr``; languages ``de``, ``en``, ``fr``, ``cs``), read
by :func:`attnkit.data.lines.read_lines`.
``--data multi30k`` means a cache directory (``$ATTNKIT_CACHE`` or ``~/.cache/attnkit``) ``/multi30k``
where the official raw files are downloaded when missing.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from attnkit.data.lines import read_lines  # gzip or plain, one error wording for every reader
from attnkit.errors import InputError

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{split}.{lang}.gz"
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")


@dataclass
class ParallelCorpus:
    """Aligned sentences: ``src[i]`` translates to ``tgt[i]``."""

    src: list[str]
    tgt: list[str]

    def __len__(self) -> int:
        return len(self.src)


def find_split_file(data_dir: str | Path, split: str, lang: str) -> Path:
    """``{data_dir}/{split}.{lang}`` or its ``.gz``; InputError naming both when neither exists."""
    base = Path(data_dir) / f"{split}.{lang}"
    for candidate in (base, base.with_name(base.name + ".gz")):
        if candidate.is_file():
            return candidate
    raise InputError(f"missing data file {base} (or {base.name}.gz) in {data_dir}")


def read_parallel(data_dir: str | Path, split: str, src: str, tgt: str) -> ParallelCorpus:
    """Read split ``split`` of the ``src``-``tgt`` pair from a corpus directory."""
    s = read_lines(find_split_file(data_dir, split, src))
    t = read_lines(find_split_file(data_dir, split, tgt))
    if len(s) != len(t):
        raise InputError(f"{split}.{src} has {len(s)} lines but {split}.{tgt} has {len(t)}: not parallel")
    return ParallelCorpus(s, t)


def read_parallel_files(src_path: str | Path, tgt_path: str | Path) -> ParallelCorpus:
    s, t = read_lines(src_path), read_lines(tgt_path)
    if len(s) != len(t):
        raise InputError(f"{src_path} has {len(s)} lines but {tgt_path} has {len(t)}: not parallel")
    return ParallelCorpus(s, t)


def cache_dir() -> Path:
    return Path(os.environ.get("ATTNKIT_CACHE", Path.home() / ".cache" / "attnkit"))


def download_multi30k(
    dest: str | Path, langs: tuple[str, ...] = ("de", "en"), splits: tuple[str, ...] = MULTI30K_SPLITS,
    url: str = MULTI30K_URL,
) -> Path:
    """Download the missing official raw Multi30k files into ``dest``; return ``dest``.

    ``url`` is a template with ``{split}`` and ``{lang}`` (a ``file://`` URL works too, as in the tests).
    Each file is written under a temporary name and renamed, so an interrupted download leaves no
    half-written file.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for split in splits:
        for lang in langs:
            target = dest / f"{split}.{lang}.gz"
            if target.exists() or (dest / f"{split}.{lang}").exists():
                continue
            source = url.format(split=split, lang=lang)
            partial = target.with_name(target.name + ".part")
            try:
                with urllib.request.urlopen(source, timeout=60) as response, open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as exc:
                partial.unlink(missing_ok=True)
                raise InputError(f"cannot download {source}: {exc}") from None
            partial.replace(target)
    return dest


def resolve_data(data: str, langs: tuple[str, ...] = ("de", "en"), url: str = MULTI30K_URL) -> Path:
    """``--data`` argument -> corpus directory: ``multi30k`` means the download cache, else a path."""
    if data == "multi30k":
        return download_multi30k(cache_dir() / "multi30k", langs, url=url)
    path = Path(data)
    if not path.is_dir():
        raise InputError(f"--data {data}: no such directory (give a corpus directory or 'multi30k')")
    return path
