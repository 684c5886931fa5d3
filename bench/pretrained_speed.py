"""Decoding speed of a Marian-shaped model (OPUS-MT base: 6+6 layers, d 512, 8 heads, FFN 2048, vocabulary
58,101, Swish, final_logits_bias) loaded through attnkit's converter, against transformers'
``MarianMTModel.generate`` and CTranslate2's ``Translator`` on the same weights, in the same process.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/pretrained_speed.py --new-tokens 32 --repeats 3

Random weights saved with save_pretrained (with a MarianTokenizer: a small SentencePiece model trained on
Multi30k, the vocabulary padded to 58,101 entries) and read back by ``load_marian``; CTranslate2 converts
the same directory with its own converter (``TransformersConverter``), once in fp32 and once with
``quantization="int8"``. EOS never wins (its ``final_logits_bias`` entry is -1e4) and is off where a side
allows it (attnkit: no stop token; transformers: ``eos_token_id=None``), so every sentence decodes exactly
``--new-tokens`` tokens on every side: the same work. Padding banned (attnkit, transformers; CTranslate2's
converter drops the token). Sources: random ids of Multi30k-like lengths (12-24 tokens), given to
CTranslate2 as the vocabulary's strings. Greedy and beam 4, batch 1 and 32; each timed call decodes
``--sentences`` sentences (rounded up to whole batches). The sides alternate round by round (attnkit,
transformers, ct2, attnkit-int8, ct2-int8), 2 threads each (CTranslate2: intra_threads 2, inter_threads 1);
every repeat is printed, then the medians and the ratios (> 1: attnkit faster). The outputs are checked:
fp32 tokens identical on the three sides; int8 sides: token agreement with their own fp32 and with each
other. ``--json`` writes every repeat.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import functools  # noqa: E402
import gzip  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from _ct2 import agreement, convert, machine, rate, report  # noqa: E402  (bench/ is on sys.path when run as a script)
from _timing import interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnkit.decoding.options import DecodeOptions, decode  # noqa: E402
from attnkit.decoding.rules import TokenRules  # noqa: E402
from attnkit.derived import frozen_weights  # noqa: E402
from attnkit.layers.quant import quantize  # noqa: E402
from attnkit.models.hf.marian import load_marian  # noqa: E402

VOCAB, PAD, EOS = 58101, 58100, 0
DATA = ROOT / ".." / "shared" / "data" / "multi30k"


def marian_base():  # noqa: ANN201
    import transformers

    cfg = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
        decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
        activation_function="swish", scale_embedding=True, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
        forced_eos_token_id=None)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0, 0.1)
        model.final_logits_bias[0, EOS] = -1e4  # EOS never wins: CTranslate2 (which stops at EOS) does the same work
    return model


def save_with_tokenizer(model, out: Path) -> list[str]:  # noqa: ANN001
    """``model`` and a MarianTokenizer (what CTranslate2's converter reads the vocabulary from) into ``out``;
    the vocabulary's strings by id."""
    import sentencepiece
    import transformers

    with gzip.open(DATA / "train.de.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(2000)]
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=300,
                                             minloglevel=2)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes(buf.getvalue())
    sp = sentencepiece.SentencePieceProcessor(model_proto=buf.getvalue())
    pieces = [sp.IdToPiece(i) for i in range(sp.GetPieceSize()) if not (sp.IsControl(i) or sp.IsUnknown(i))]
    items = ["</s>", "<unk>", *pieces]
    items += [f"<unused{i}>" for i in range(VOCAB - 1 - len(items))]
    vocab = [*items, "<pad>"]
    (out / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(vocab)}))
    transformers.MarianTokenizer(str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json")
                                 ).save_pretrained(out)
    model.save_pretrained(out)
    return vocab


def sources(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(12, 25, (batch,), generator=g)
    x = torch.full((batch, int(lengths.max())), PAD)
    for i, n in enumerate(lengths.tolist()):
        x[i, :n] = torch.randint(1, VOCAB - 1, (n,), generator=g)
    return x


@torch.no_grad()
def ours(model, batches: list[torch.Tensor], beam: int, n: int) -> list[list[int]]:  # noqa: ANN001
    out = []
    for src in batches:
        session = model.start_decoding(src, n + 1)
        start = torch.full((src.shape[0], 1), PAD)
        hyps = decode(session, start, n, -1, PAD, TokenRules(banned=(PAD,)), DecodeOptions(beam_size=beam))
        out += [h[0][1] for h in hyps]
    return out


@torch.no_grad()
def peer(model, batches: list[torch.Tensor], beam: int, n: int) -> list[list[int]]:  # noqa: ANN001
    out = []
    for src in batches:
        res = model.generate(input_ids=src, attention_mask=(src != PAD).long(), num_beams=beam, do_sample=False,
                             max_new_tokens=n, min_new_tokens=n, eos_token_id=None, forced_eos_token_id=None,
                             bad_words_ids=[[PAD]], early_stopping=True, use_cache=True)
        out += res[:, 1:].tolist()  # without the decoder start token
    return out


def ct2(translator, batches: list[list[list[str]]], beam: int, n: int, ids: dict[str, int]) -> list[list[int]]:  # noqa: ANN001
    out = []
    for src in batches:
        res = translator.translate_batch(src, beam_size=beam, max_decoding_length=n, length_penalty=1.0,
                                         max_batch_size=0)
        out += [[ids[t] for t in r.hypotheses[0]] for r in res]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--beams", default="1,4")
    p.add_argument("--sentences", default="4,32", help="sentences per timed call, per batch size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-int8", action="store_true", help="leave out the int8 sides")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    import ctranslate2
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    print(machine(), flush=True)
    hf = marian_base()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        vocab = save_with_tokenizer(hf, Path(d) / "hf")
        model = load_marian(Path(d) / "hf")
        sides = {"attnkit": model, "transformers": hf}
        kinds = [("ct2", None, "float32")] + ([] if args.no_int8 else [("ct2-int8", "int8", "int8")])
        for name, quant, compute in kinds:
            path = convert(Path(d) / "hf", Path(d) / name, quant)
            sides[name] = ctranslate2.Translator(str(path), device="cpu", compute_type=compute, inter_threads=1,
                                                 intra_threads=args.threads)
        if not args.no_int8:
            sides = {**{k: sides[k] for k in ("attnkit", "transformers", "ct2")},
                     "attnkit-int8": quantize(copy.deepcopy(model), "int8"), "ct2-int8": sides["ct2-int8"]}
        print(f"converted and loaded in {time.perf_counter() - t0:.1f} s (CTranslate2 fp32"
              f"{'' if args.no_int8 else ' and int8'} through TransformersConverter)", flush=True)
    ids = {t: i for i, t in enumerate(vocab)}
    results = []
    counts = dict(zip(map(int, args.batches.split(",")), map(int, args.sentences.split(",")), strict=True))
    with frozen_weights():  # as Translator.translate: the derived weight copies are made once for every batch
        for batch, count in counts.items():
            results += measure(sides, batch, count, vocab, ids, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "results": results}, indent=2) + "\n")
    return 0


def measure(sides: dict, batch: int, count: int, vocab: list[str], ids: dict[str, int],
            args: argparse.Namespace) -> list[dict]:
    """Greedy and beam rows of one batch size: ``count`` sentences per timed call, in batches of ``batch``."""
    results = []
    batches = [sources(batch, 1000 * batch + i) for i in range(-(-count // batch))]
    strings = [[[vocab[t] for t in row if t != PAD] for row in src.tolist()] for src in batches]
    sentences = batch * len(batches)
    for beam in map(int, args.beams.split(",")):
        def run(side: str, beam: int = beam):  # noqa: ANN202
            """One call of ``side`` on every batch: its tokens per sentence."""
            if side.startswith("ct2"):
                return functools.partial(ct2, sides[side], strings, beam, args.new_tokens, ids)
            return functools.partial(peer if side == "transformers" else ours, sides[side], batches, beam,
                                     args.new_tokens)

        t0 = time.perf_counter()
        outputs = {side: run(side)() for side in sides}  # the warm-up, and the outputs compared
        name = f"batch {batch}, {'greedy' if beam == 1 else f'beam {beam}'}, {sentences} sentences"
        print(f"{name}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
        assert all(len(o) == sentences and all(len(r) == args.new_tokens for r in o) for o in outputs.values()), \
            "a side stopped early"
        checks = {}
        for a, b in [("attnkit", "transformers"), ("attnkit", "ct2"), ("attnkit-int8", "attnkit"),
                     ("ct2-int8", "ct2"), ("attnkit-int8", "ct2-int8")]:
            if a in outputs and b in outputs:
                same, tok = agreement(outputs[a], outputs[b])
                checks[f"{a} vs {b}"] = {"identical": same, "token_agreement": tok}
                print(f"    {a} vs {b}: identical outputs {same:.1%}, token agreement {tok:.1%}", flush=True)

        runs = interleaved({side: rate(sentences, run(side)) for side in sides}, args.repeats)
        pairs = [("attnkit", "transformers"), ("attnkit", "ct2")]
        pairs += [("attnkit-int8", "ct2-int8"), ("attnkit-int8", "ct2")] if "ct2-int8" in sides else []
        row = report(name, "sentences/s", runs, pairs)
        results.append({"batch": batch, "beam": beam, "sentences": sentences, "new_tokens": args.new_tokens,
                        "checks": checks, **row})
    return results


if __name__ == "__main__":
    raise SystemExit(main())
