"""The same-budget translation-quality peer: Hugging Face ``MarianMTModel`` trained from scratch on Multi30k.

    flock /tmp/attnkit-heavy.lock nice -n 0 .venv/bin/python bench/marian_peer.py --out /work/runs/marian-deen60
    flock /tmp/attnkit-heavy.lock nice -n 0 .venv/bin/python bench/marian_peer.py --out /work/runs/marian-ende60 \\
        --src en --tgt de

The recipe of the earlier peer (8.2M parameters), built only from Hugging Face parts: a joint BPE vocabulary
of 10k trained with ``tokenizers`` on the training sources + targets (NFKC, SentencePiece-style
``Metaspace`` pre-tokenizer and decoder, so decoding returns detokenized text), ``MarianConfig`` d_model 256,
3 + 3 layers, 4 heads, FFN 1024, dropout 0.1 (attention/activation dropout at Marian's default 0),
sinusoidal positions, scaled embeddings, encoder/decoder/output embeddings tied; label smoothing 0.1;
Adam(0.9, 0.98, eps 1e-9), peak lr 1e-3, ``transformers.get_inverse_sqrt_schedule`` (250 linear warm-up
steps, then inverse-sqrt decay); gradient clipping 1.0; batches of at most 4,096 padded tokens built from
length-sorted pools of the shuffled corpus (attnkit's ``token_batches``, the batcher attnkit trains with);
at most 128 tokens per side (EOS included). fp32 by default (``--precision bf16``: CPU autocast).

The budget ``--minutes`` is wall clock from the start of this script: tokenizer training, encoding, the
training steps and the periodic validation (greedy BLEU on the first 300 val sentences and the val loss,
every ``--eval-every-min`` minutes, as attnkit's training evaluates inside its own budget) all count; the
last evaluation is made to end inside the budget. Then, outside the budget, the length penalty of beam 5
is chosen on the first 500 val sentences among 0.6 / 1.0 / 1.4 and test_2016_flickr is decoded with
``model.generate`` (greedy and beam 5, batches of 64 sentences sorted by source length, at most 128 new
tokens) and scored by attnkit's ``corpus_scores`` (sacreBLEU cased, detokenized, 13a, and chrF), as
``bench/translate_quality.py`` scores attnkit. Writes ``--out/results.json`` (read by
``bench/translate_quality.py --peer-results``), the model (``save_pretrained``), ``tokenizer.json`` and the
test translations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# On a shared 2-core machine spinning OpenMP threads collapse throughput; see bench/translate_quality.py.
# OMP_WAIT_POLICY=default: the runtime's own policy (libgomp rejects the word, so it is removed here).
# Only before torch (and its OpenMP runtime) is loaded: imported by translate_quality.py, whose process has
# its policy already, this would only make machine_info() report a policy the runtime never read.
if "torch" not in sys.modules:
    if os.environ.get("OMP_WAIT_POLICY", "").lower() == "default":
        del os.environ["OMP_WAIT_POLICY"]
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tokenizers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from transformers import GenerationConfig, MarianConfig, MarianMTModel, get_inverse_sqrt_schedule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _ct2 import FLAGS  # noqa: E402  (the CPU flags every bench prints; bench/ is on sys.path as a script)
from attnkit.data.batching import pad_sequences, token_batches  # noqa: E402
from attnkit.data.parallel import read_parallel  # noqa: E402
from attnkit.evaluation.bleu import corpus_scores  # noqa: E402
from attnkit.models import num_parameters  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "multi30k"
SPECIALS = ("<pad>", "</s>", "<unk>")  # Marian's three specials; ids 0, 1, 2
PAD, EOS = 0, 1
IGNORE = -100  # label id the loss skips (Hugging Face's convention)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (outside the repository)")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget, tokenizer training included")
    p.add_argument("--eval-every-min", type=float, default=5.0, help="minutes between validation evaluations")
    p.add_argument("--val-bleu-n", type=int, default=300, help="val sentences of the periodic greedy BLEU")
    p.add_argument("--vocab-size", type=int, default=10000)
    p.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batch (per side)")
    p.add_argument("--max-len", type=int, default=128, help="tokens per sentence, EOS included")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    # ~2.7 s per 4,096-token fp32 step on the 2 cores: about 1,200 steps in 60 minutes, so fairseq's 4,000
    # warm-up steps would never end; 250 is ~20% of the run (attnkit's recipe: 500 of 3,000-4,700 steps).
    p.add_argument("--warmup", type=int, default=250, help="linear warm-up steps before the inverse-sqrt decay")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: CPU autocast")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lp", type=float, nargs="+", default=[0.6, 1.0, 1.4], help="length penalties tried on val")
    p.add_argument("--val-n", type=int, default=500, help="val sentences for choosing the length penalty")
    p.add_argument("--test-n", type=int, help="only the first N test sentences (smoke tests)")
    p.add_argument("--batch", type=int, default=64, help="sentences per generate() call")
    p.add_argument("--log-every", type=int, default=50)
    return p.parse_args(argv)


def machine_info() -> dict:
    """CPU model, the vector/matrix flags that matter for the products, cores, threads, versions."""
    info: dict = {"cpu": platform.processor() or "?", "flags": [], "cores": os.cpu_count()}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        have = set(next(line for line in lines if line.startswith("flags")).split(":", 1)[1].split())
        info["flags"] = [f for f in FLAGS if f in have]
    except (OSError, StopIteration):
        pass
    info.update(torch=torch.__version__, transformers=transformers.__version__, tokenizers=tokenizers.__version__,
                threads=torch.get_num_threads(), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "default"))
    return info


def machine_line(m: dict) -> str:
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, flags {' '.join(m.get('flags', [])) or '?'}; "
            f"torch {m.get('torch', '?')}, {m.get('threads', '?')} threads, OMP_WAIT_POLICY "
            f"{m.get('omp_wait_policy', '?')}")


# ----------------------------------------------------------------------------------- data and model
def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Joint BPE: NFKC, Metaspace ("▁" starts a word) pre-tokenizer and decoder, Marian's specials first."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                                       show_progress=False))
    return tok


def encode(tok: Tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Sentences -> id lists ending in EOS, at most ``max_len`` ids each."""
    return [e.ids[: max_len - 1] + [EOS] for e in tok.encode_batch(texts)]


def build_model(vocab_size: int, max_len: int) -> MarianMTModel:
    config = MarianConfig(
        vocab_size=vocab_size, decoder_vocab_size=vocab_size, d_model=256, encoder_layers=3, decoder_layers=3,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024,
        dropout=0.1, max_position_embeddings=max_len + 1, scale_embedding=True, pad_token_id=PAD,
        eos_token_id=EOS, decoder_start_token_id=PAD, forced_eos_token_id=EOS,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
    )
    model = MarianMTModel(config)
    # Marian's conventions: decoding starts from <pad>, ends at </s>, </s> forced at the length limit.
    model.generation_config = GenerationConfig(decoder_start_token_id=PAD, eos_token_id=EOS, pad_token_id=PAD,
                                               forced_eos_token_id=EOS, bad_words_ids=[[PAD]])
    return model


def make_batch(src: list[list[int]], tgt: list[list[int]], idx: list[int], model: MarianMTModel) -> dict:
    """Rows ``idx`` -> input_ids / attention_mask [B, S], decoder_input_ids / labels [B, T] (pad -> -100)."""
    input_ids = pad_sequences([src[i] for i in idx], PAD)
    labels = pad_sequences([tgt[i] for i in idx], IGNORE)
    return {"input_ids": input_ids, "attention_mask": input_ids != PAD, "labels": labels,
            "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels=labels)}


def batch_loss(model: MarianMTModel, batch: dict, smoothing: float, precision: str) -> tuple[torch.Tensor, int]:
    """Mean label-smoothed cross-entropy over the batch's target tokens, and their number."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_input_ids"]).logits  # [B, T, V]
    labels = batch["labels"]
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                           label_smoothing=smoothing)
    return loss, int((labels != IGNORE).sum())


@torch.no_grad()
def val_loss(model: MarianMTModel, src: list[list[int]], tgt: list[list[int]], precision: str) -> float:
    """Cross-entropy per target token (no smoothing) over the validation set, as attnkit's val_loss."""
    model.eval()
    order = sorted(range(len(src)), key=lambda i: len(src[i]))
    total, count = 0.0, 0
    for start in range(0, len(order), 64):
        loss, n = batch_loss(model, make_batch(src, tgt, order[start : start + 64], model), 0.0, precision)
        total, count = total + float(loss) * n, count + n
    return total / max(count, 1)


@torch.no_grad()
def translate(model: MarianMTModel, tok: Tokenizer, texts: list[str], *, num_beams: int, length_penalty: float,
              batch: int, max_len: int, precision: str) -> list[str]:
    """``model.generate`` over batches of ``batch`` sentences sorted by source length; outputs in input order."""
    model.eval()
    ids = encode(tok, texts, max_len)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out: list[str] = [""] * len(ids)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        input_ids = pad_sequences([ids[i] for i in idx], PAD)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            gen = model.generate(input_ids=input_ids, attention_mask=input_ids != PAD, num_beams=num_beams,
                                 length_penalty=length_penalty, max_new_tokens=max_len, do_sample=False)
        for i, text in zip(idx, tok.decode_batch(gen.tolist(), skip_special_tokens=True), strict=True):
            out[i] = text
    return out


# ----------------------------------------------------------------------------------- training
class Peer:
    """The tokenizer, model, optimizer and encoded data of one run; ``train`` runs to the deadline."""

    def __init__(self, args: argparse.Namespace, started: float) -> None:
        self.args, self.started = args, started
        train = read_parallel(args.data, "train", args.src, args.tgt)
        val = read_parallel(args.data, "val", args.src, args.tgt)
        self.val_text = val
        self.tok = train_tokenizer(train.src + train.tgt, args.vocab_size)
        self.train_src, self.train_tgt = encode(self.tok, train.src, args.max_len), encode(self.tok, train.tgt,
                                                                                           args.max_len)
        self.val_src, self.val_tgt = encode(self.tok, val.src, args.max_len), encode(self.tok, val.tgt, args.max_len)
        self.lengths = [max(len(s), len(t)) for s, t in zip(self.train_src, self.train_tgt, strict=True)]
        self.tokenizer_s = time.monotonic() - started  # tokenizer training and encoding
        torch.manual_seed(args.seed)
        self.model = build_model(self.tok.get_vocab_size(), args.max_len)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)
        self.sched = get_inverse_sqrt_schedule(self.opt, num_warmup_steps=args.warmup)
        self.step, self.epoch, self.epochs, self.tokens, self.train_s, self.eval_s = 0, 0, 0.0, 0, 0.0, 0.0
        self.curve: list[dict] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def evaluate(self) -> dict:
        t0 = time.monotonic()
        loss = val_loss(self.model, self.val_src, self.val_tgt, self.args.precision)
        n = self.args.val_bleu_n
        hyps = translate(self.model, self.tok, self.val_text.src[:n], num_beams=1, length_penalty=1.0,
                         batch=self.args.batch, max_len=self.args.max_len, precision=self.args.precision)
        bleu = corpus_scores(hyps, self.val_text.tgt[:n]).bleu
        seconds = time.monotonic() - t0
        self.eval_s += seconds
        rec = {"step": self.step, "minutes": self.elapsed() / 60, "train_minutes": self.train_s / 60,
               "val_loss": loss, "val_bleu_greedy": bleu, "eval_s": seconds}
        self.curve.append(rec)
        print(f"eval step {self.step:>6} at {rec['minutes']:6.2f} min: val loss {loss:.3f}, val[:{n}] greedy BLEU "
              f"{bleu:6.2f} ({seconds:.0f} s)", flush=True)
        self.model.train()
        return rec

    def train_step(self, idx: list[int]) -> tuple[float, int]:
        batch = make_batch(self.train_src, self.train_tgt, idx, self.model)
        loss, n = batch_loss(self.model, batch, self.args.label_smoothing, self.args.precision)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return float(loss.detach()), n

    def train(self) -> None:
        """Steps until the budget, less the time of one evaluation, is spent; evaluations on the way and at the
        end. An epoch = every batch of :func:`token_batches` of the shuffled corpus once."""
        a = self.args
        budget, every = a.minutes * 60, a.eval_every_min * 60
        next_eval, last_eval_s = every, 30.0  # a guess until the first evaluation is timed
        window = {"loss": 0.0, "tokens": 0, "t": 0.0, "steps": 0}
        self.model.train()
        while True:
            batches = token_batches(self.lengths, a.max_tokens, a.seed, self.epoch)
            for i, idx in enumerate(batches):
                if self.elapsed() + last_eval_s >= budget:
                    self.epochs = self.epoch + i / len(batches)
                    self.evaluate()
                    return
                t0 = time.monotonic()
                loss, n = self.train_step(idx)
                dt = time.monotonic() - t0
                self.train_s, self.tokens = self.train_s + dt, self.tokens + n
                for k, v in (("loss", loss * n), ("tokens", n), ("t", dt), ("steps", 1)):
                    window[k] += v
                if self.step % a.log_every == 0:
                    print(f"step {self.step:>6} epoch {self.epoch} loss {window['loss'] / window['tokens']:.3f} lr "
                          f"{self.sched.get_last_lr()[0]:.2e} {window['tokens'] / window['t']:.0f} tgt tok/s "
                          f"elapsed {self.elapsed() / 60:.1f} min", flush=True)
                    window = {"loss": 0.0, "tokens": 0, "t": 0.0, "steps": 0}
                if self.elapsed() >= next_eval:
                    last_eval_s = self.evaluate()["eval_s"]
                    next_eval += every
            self.epoch += 1


# ----------------------------------------------------------------------------------- scoring and report
def score(peer: Peer, args: argparse.Namespace, out: Path) -> dict:
    """Length penalty on val[:val_n] (beam 5), then test_2016_flickr greedy and beam 5, timed."""
    test = read_parallel(args.data, "test_2016_flickr", args.src, args.tgt)
    if args.test_n:
        test.src, test.tgt = test.src[: args.test_n], test.tgt[: args.test_n]
    common = {"batch": args.batch, "max_len": args.max_len, "precision": args.precision}
    lp_bleu = {}
    for lp in args.lp:
        hyps = translate(peer.model, peer.tok, peer.val_text.src[: args.val_n], num_beams=5, length_penalty=lp,
                         **common)
        lp_bleu[lp] = corpus_scores(hyps, peer.val_text.tgt[: args.val_n]).bleu
        print(f"val[:{args.val_n}] beam 5 length penalty {lp}: BLEU {lp_bleu[lp]:.2f}", flush=True)
    best_lp = max(lp_bleu, key=lambda k: lp_bleu[k])
    scores = {}
    for name, beams in (("greedy", 1), ("beam5", 5)):
        t0 = time.perf_counter()
        hyps = translate(peer.model, peer.tok, test.src, num_beams=beams, length_penalty=best_lp, **common)
        seconds = time.perf_counter() - t0
        scores[name] = {**corpus_scores(hyps, test.tgt).to_dict(), "seconds": seconds}
        (out / f"test_2016_flickr.{name}.{args.tgt}").write_text("".join(h + "\n" for h in hyps))
        print(f"test {name}: BLEU {scores[name]['bleu']:.2f} chrF {scores[name]['chrf']:.2f} ({seconds:.1f} s)",
              flush=True)
    return {"length_penalty": best_lp, "val_lp_bleu": lp_bleu, "scores": scores, "test_sentences": len(test)}


def report(res: dict) -> None:
    print("\nvalidation (greedy BLEU on the first val sentences, val loss) during training:")
    print(f"{'step':>7} {'minutes':>8} {'val loss':>9} {'val BLEU':>9}")
    for r in res["curve"]:
        print(f"{r['step']:>7} {r['minutes']:>8.1f} {r['val_loss']:>9.3f} {r['val_bleu_greedy']:>9.2f}")
    w = res["wall"]
    print(f"\n{res['name']}, {res['pair']} test_2016_flickr ({res['test_sentences']} sentences), sacreBLEU "
          f"{res['scores']['greedy']['signature']}")
    print(f"machine: {machine_line(res['machine'])}")
    print(f"model: {res['params'] / 1e6:.2f}M parameters ({res['trainable_params'] / 1e6:.2f}M trained), vocab "
          f"{res['vocab_size']}; {res['steps']} steps, {res['epochs']:.1f} epochs, "
          f"{res['train_tokens_per_s_mean']:.0f} target tokens/s; {res['settings']['precision']}")
    print(f"wall clock: tokenizer {w['tokenizer_s']:.1f} s, training steps {w['train_s'] / 60:.1f} min, evaluation "
          f"{w['eval_s'] / 60:.1f} min, in budget {w['budget_used_s'] / 60:.1f} of {w['budget_s'] / 60:.1f} min")
    print(f"{'decoding':<9} {'BLEU':>6} {'chrF':>6} {'seconds':>8}")
    for name in ("greedy", "beam5"):
        s = res["scores"][name]
        print(f"{name:<9} {s['bleu']:>6.2f} {s['chrf']:>6.2f} {s['seconds']:>8.1f}")
    print(f"beam length penalty {res['length_penalty']} (val BLEU {res['val_lp_bleu']})")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peer = Peer(args, started)
    print(f"machine: {machine_line(machine_info())}", flush=True)
    print(f"tokenizer: {peer.tok.get_vocab_size()} tokens, {peer.tokenizer_s:.1f} s; model "
          f"{num_parameters(peer.model) / 1e6:.2f}M parameters", flush=True)
    peer.train()
    budget_used = peer.elapsed()
    peer.model.save_pretrained(out / "model")
    peer.tok.save(str(out / "tokenizer.json"))
    res = {
        "name": "HF MarianMTModel (bench/marian_peer.py)", "pair": f"{args.src}->{args.tgt}",
        "params": num_parameters(peer.model),
        "trainable_params": sum(p.numel() for p in peer.model.parameters() if p.requires_grad),
        "vocab_size": peer.tok.get_vocab_size(), "steps": peer.step,
        "epochs": peer.epochs, "train_tokens": peer.tokens,
        "train_tokens_per_s_mean": peer.tokens / max(peer.train_s, 1e-9),
        "wall": {"tokenizer_s": peer.tokenizer_s, "train_s": peer.train_s, "eval_s": peer.eval_s,
                 "budget_used_s": budget_used, "budget_s": args.minutes * 60},
        "curve": peer.curve, "machine": machine_info(), "settings": vars(args),
        "model_config": {k: getattr(peer.model.config, k) for k in (
            "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "dropout",
            "attention_dropout", "activation_dropout", "activation_function", "scale_embedding",
            "max_position_embeddings", "share_encoder_decoder_embeddings", "tie_word_embeddings")},
        "tokenizer": "HF tokenizers BPE, joint on train sources + targets; NFKC normalizer, Metaspace pre-tokenizer "
                     "and decoder",
    }
    res.update(score(peer, args, out))
    res["wall"]["decode_s"] = {k: v["seconds"] for k, v in res["scores"].items()}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    report(res)
    print(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
