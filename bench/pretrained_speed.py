"""Decoding speed of a Marian-shaped model (OPUS-MT base: 6+6 layers, d 512, 8 heads, FFN 2048, vocabulary
58,101, Swish, final_logits_bias) loaded through attnkit's converter, against transformers'
``MarianMTModel.generate`` on the same weights, in the same process.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/pretrained_speed.py --new-tokens 32 --repeats 3

Random weights saved with save_pretrained and read back by ``load_marian``; EOS off on both sides (attnkit:
no stop token; transformers: ``eos_token_id=None``, ``forced_eos_token_id=None``), so every sentence decodes
exactly ``--new-tokens`` tokens: the same work. Sources: random ids of Multi30k-like lengths (12-24
tokens). Greedy and beam 4, batch 1 and 32; rounds alternate (ours, peer, ...) and the best of
``--repeats`` is kept. Ratios > 1: attnkit is faster. ``--json`` writes every repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from _timing import interleaved, timed  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnkit.decoding.options import DecodeOptions, decode  # noqa: E402
from attnkit.decoding.rules import TokenRules  # noqa: E402
from attnkit.derived import frozen_weights  # noqa: E402
from attnkit.models.hf.marian import load_marian  # noqa: E402

VOCAB, PAD = 58101, 58100


def marian_base():  # noqa: ANN201
    import transformers

    cfg = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
        decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
        activation_function="swish", scale_embedding=True, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=PAD, eos_token_id=0, decoder_start_token_id=PAD, forced_eos_token_id=None)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0, 0.1)
    return model


def sources(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(12, 25, (batch,), generator=g)
    x = torch.full((batch, int(lengths.max())), PAD)
    for i, n in enumerate(lengths.tolist()):
        x[i, :n] = torch.randint(1, VOCAB - 1, (n,), generator=g)
    return x


@torch.no_grad()
def ours(model, src: torch.Tensor, beam: int, n: int) -> list:  # noqa: ANN001
    session = model.start_decoding(src, n + 1)
    start = torch.full((src.shape[0], 1), PAD)
    return decode(session, start, n, -1, PAD, TokenRules(banned=(PAD,)), DecodeOptions(beam_size=beam))


@torch.no_grad()
def peer(model, src: torch.Tensor, beam: int, n: int) -> torch.Tensor:  # noqa: ANN001
    return model.generate(input_ids=src, attention_mask=(src != PAD).long(), num_beams=beam, do_sample=False,
                          max_new_tokens=n, min_new_tokens=n, eos_token_id=None, forced_eos_token_id=None,
                          bad_words_ids=[[PAD]], early_stopping=True, use_cache=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--beams", default="1,4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hf = marian_base()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model = load_marian(d)
    results = []
    with frozen_weights():  # as Translator.translate: the derived weight copies are made once for every batch
        for batch in map(int, args.batches.split(",")):
            results += measure(model, hf, batch, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "results": results}, indent=2) + "\n")
    return 0


def measure(model, hf, batch: int, args: argparse.Namespace) -> list[dict]:  # noqa: ANN001
    """Greedy and beam rows of one batch size (the best of ``--repeats`` alternating rounds)."""
    results = []
    src = sources(batch, batch)
    for beam in map(int, args.beams.split(",")):
        ours(model, src, beam, 2), peer(hf, src, beam, 2)  # warm-up (and attnkit's derived weight copies)
        times = interleaved({"attnkit": timed(lambda s=src, k=beam: ours(model, s, k, args.new_tokens)),
                             "transformers": timed(lambda s=src, k=beam: peer(hf, s, k, args.new_tokens))},
                            args.repeats)
        a, t = min(times["attnkit"]), min(times["transformers"])
        results.append({"batch": batch, "beam": beam, "new_tokens": args.new_tokens, "attnkit_s": a,
                        "transformers_s": t, "attnkit_sentences_per_s": batch / a,
                        "transformers_sentences_per_s": batch / t, "ratio": t / a, "repeats": times})
        print(f"batch {batch:>3} beam {beam}: attnkit {batch / a:8.2f} sentences/s, transformers "
              f"{batch / t:8.2f} sentences/s, ratio {t / a:.2f}", flush=True)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
