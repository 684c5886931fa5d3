"""Translation speed benchmark, against peers of the same shape in the same process.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/translate_speed.py --parts train --repeats 6
    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/translate_speed.py --run RUN --parts greedy,beam5
    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/translate_speed.py --parts greedy,beam5 --sentences 500

1. Training: target tokens/s of attnkit's Transformer vs a model built from ``torch.nn.Transformer`` (same
   embeddings, sinusoidal positions, tied output projection, masks, optimizer, label-smoothed loss and
   Multi30k batches). attnkit trains as ``TranslationTask.loss`` does (``Transformer.loss_sum``: the output
   projection only at real target positions); the peer projects every position, as usual.
2. Decoding: sentences/s on Multi30k test_2016_flickr of attnkit (KV-cached greedy and beam 5) vs Hugging
   Face ``MarianMTModel.generate`` (greedy, beam 5) holding the same weights (copied from attnkit's model,
   logits checked). Both get the same batches (``--batch`` sentences, sorted by source length; a list such
   as ``--batch 1,8,64`` measures each batch size in turn).
   ``--run RUN``: the run's trained weights and tokenizer, EOS on (Marian's beam search with
   ``early_stopping=True``, attnkit's rule: a sentence is done with K finished hypotheses), at most 50
   tokens more than the source; the printout says how many outputs are identical on both sides.
   Without ``--run``: random weights, EOS disabled on both sides, so every sentence decodes exactly
   ``--new-tokens`` tokens: the same work for both.
Runs alternate (ours, peer, ours, peer, ...) and the best of ``--repeats`` is kept, which damps the noise
of a shared machine; every repeat is printed (training) or saved in the JSON. Ratios > 1: attnkit is faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep (PASSIVE) unless the caller says otherwise: on a shared machine, spinning threads
# steal the other jobs' cores. OMP_WAIT_POLICY=default runs with the OpenMP runtime's own policy (what a user
# gets: threads spin briefly before sleeping), which makes small operations much cheaper.
if os.environ.get("OMP_WAIT_POLICY", "").lower() == "default":
    del os.environ["OMP_WAIT_POLICY"]
else:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from _timing import interleaved  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnkit.data.batching import pad_sequences, sorted_batches, token_batches  # noqa: E402
from attnkit.data.parallel import read_parallel  # noqa: E402
from attnkit.decoding import GenerationConfig, generate  # noqa: E402
from attnkit.decoding.beam import BeamConfig, beam_search  # noqa: E402
from attnkit.layers import sinusoidal_table  # noqa: E402
from attnkit.layers.losses import smoothed_cross_entropy  # noqa: E402
from attnkit.models.transformer import Transformer, TransformerConfig  # noqa: E402
from attnkit.tasks.runs import open_run  # noqa: E402
from attnkit.tasks.translation import make_batch  # noqa: E402
from attnkit.tokenizers.subword import BOS_ID, EOS_ID, PAD_ID, SubwordTokenizer  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "multi30k"


class TorchTransformer(nn.Module):
    """The same model from torch.nn.Transformer (the peer of the training benchmark)."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.register_buffer("pe", sinusoidal_table(c.max_len, c.d_model), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.core = nn.Transformer(c.d_model, c.n_heads, c.n_encoder_layers, c.n_decoder_layers, c.d_ff,
                                   c.dropout, batch_first=True)
        self.core.encoder.norm = None  # attnkit's post-norm model has no final norms
        self.core.decoder.norm = None
        self.out = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        self.out.weight = self.embed.weight

    def _emb(self, ids: Tensor) -> Tensor:
        return self.drop(self.embed(ids) * math.sqrt(self.c.d_model) + self.pe[: ids.shape[1]])

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        pad = src == self.c.pad_id
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        h = self.core(self._emb(src), self._emb(tgt), tgt_mask=causal, src_key_padding_mask=pad,
                      memory_key_padding_mask=pad, tgt_is_causal=True)
        return self.out(h)


def train_speed(model: nn.Module, batches: list, steps: int, precision: str = "fp32") -> float:
    """Target tokens per second of forward + backward + Adam over ``steps`` batches (after one warm-up);
    ``precision`` "bf16": the forward under bf16 autocast, as attnkit's training loop runs it."""
    opt = torch.optim.Adam(model.parameters(), 1e-4, betas=(0.9, 0.98), eps=1e-9)
    model.train()
    tokens, seconds = 0, 0.0
    for i, b in enumerate(batches[: steps + 1]):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if isinstance(model, Transformer):  # attnkit's path (TranslationTask.loss): padding not projected
                loss = model.loss_sum(b.src, b.tgt_in, b.tgt_out, smoothing=0.1)
            else:
                loss = smoothed_cross_entropy(model(b.src, b.tgt_in), b.tgt_out, smoothing=0.1, ignore_index=PAD_ID)
        (loss.total.float() / loss.count).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i > 0:
            seconds += time.perf_counter() - start
            tokens += int(loss.count)
    return tokens / seconds


def marian_like(c: TransformerConfig):  # noqa: ANN201
    from transformers import MarianConfig, MarianMTModel

    mc = MarianConfig(vocab_size=c.src_vocab_size, d_model=c.d_model, encoder_layers=c.n_encoder_layers,
                      decoder_layers=c.n_decoder_layers, encoder_attention_heads=c.n_heads,
                      decoder_attention_heads=c.n_heads, encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff,
                      max_position_embeddings=c.max_len, activation_function="relu", dropout=0.0,
                      attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True, pad_token_id=PAD_ID,
                      eos_token_id=c.eos_id, decoder_start_token_id=BOS_ID, forced_eos_token_id=None,
                      share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    return MarianMTModel(mc).eval()


_MARIAN_NAMES = {"self_attn_norm": "self_attn_layer_norm", "cross_attn": "encoder_attn",
                 "cross_attn_norm": "encoder_attn_layer_norm", "ffn": None, "ffn_norm": "final_layer_norm"}


@torch.no_grad()
def marian_from(model: Transformer):  # noqa: ANN201
    """A MarianMTModel holding ``model``'s weights (post-norm, tied embeddings, sinusoidal positions), checked
    to give the same logits."""
    marian = marian_like(model.config)
    state = {}
    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side)):
            for name, t in layer.state_dict().items():
                head, rest = name.split(".", 1)
                head = _MARIAN_NAMES.get(head, head)
                state[f"model.{side}.layers.{i}.{rest if head is None else head + '.' + rest}"] = t
    emb = model.src_embed.tokens.weight
    for name in ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
                 "lm_head.weight"):
        state[name] = emb
    marian.load_state_dict(state, strict=False)
    for side in (marian.model.encoder, marian.model.decoder):  # attnkit interleaves sin/cos columns
        side.embed_positions.weight.copy_(model.src_embed.position_table[: side.embed_positions.weight.shape[0]])
    src = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    tgt = torch.tensor([[BOS_ID, 13, 14], [BOS_ID, 15, 16]])
    theirs = marian(input_ids=src, attention_mask=(src != PAD_ID).long(), decoder_input_ids=tgt).logits
    diff = float((theirs - model(src, tgt)).abs().max())
    assert diff < 1e-3, f"Marian copy differs from attnkit by {diff}"
    return marian


def _budget(src: Tensor, new_tokens: int | None, max_len: int) -> int:
    """Fixed length, or as attnkit's Translator: up to 50 tokens more than the source."""
    return new_tokens if new_tokens else min(max_len - 1, src.shape[1] + 50)


@torch.no_grad()
def decode_ours(model: Transformer, batches: list[Tensor], beam: int, new_tokens: int | None,
                eos: bool) -> tuple[float, list[Tensor]]:
    """Sentences/s and the outputs [B, T] of each batch (EOS disabled when not ``eos``)."""
    outs = []
    start = time.perf_counter()
    for src in batches:
        n = _budget(src, new_tokens, model.config.max_len)
        bos = torch.full((src.shape[0], 1), BOS_ID)
        session = model.start_decoding(src, n + 1)
        if beam == 1:
            out = generate(session, bos, GenerationConfig(n, stop_tokens=(EOS_ID,) if eos else (), pad_id=PAD_ID))
        else:
            cfg = BeamConfig(beam, 1.0, n, eos_id=EOS_ID if eos else -1, pad_id=PAD_ID)
            out = beam_search(session, bos, cfg).tokens
        outs.append(out)
    return sum(len(b) for b in batches) / (time.perf_counter() - start), outs


@torch.no_grad()
def decode_marian(model, batches: list[Tensor], beam: int, new_tokens: int | None,  # noqa: ANN001
                  eos: bool) -> tuple[float, list[Tensor]]:
    """The same through ``generate``; with ``eos``, beam search stops a sentence once it has K finished
    hypotheses (``early_stopping=True``, attnkit's rule)."""
    outs = []
    start = time.perf_counter()
    for src in batches:
        n = _budget(src, new_tokens, model.config.max_position_embeddings)
        stop = dict(eos_token_id=EOS_ID) if eos else dict(eos_token_id=None, min_new_tokens=n)
        if beam > 1:
            stop["early_stopping"] = eos
        out = model.generate(input_ids=src, attention_mask=(src != PAD_ID).long(), num_beams=beam,
                             do_sample=False, max_new_tokens=n, forced_eos_token_id=None, length_penalty=1.0,
                             use_cache=True, **stop)
        outs.append(out[:, 1:])  # without the decoder start token
    return sum(len(b) for b in batches) / (time.perf_counter() - start), outs


def _sentences(outs: list[Tensor]) -> list[list[int]]:
    rows = [r for out in outs for r in out.tolist()]
    return [r[: r.index(EOS_ID)] if EOS_ID in r else [t for t in r if t != PAD_ID] for r in rows]


def compare_decoding(ours: Transformer, marian, batches: list[Tensor], beam: int,  # noqa: ANN001
                     new_tokens: int | None, eos: bool, repeats: int, batch: int) -> dict:
    """Sentences/s of both sides over ``batches`` (alternating, best of ``repeats``), printed and returned."""
    decode_ours(ours, batches[:1], beam, new_tokens, eos)  # warm-up (first-call costs)
    decode_marian(marian, batches[:1], beam, new_tokens, eos)
    done = interleaved({"ours": lambda r: decode_ours(ours, batches, beam, new_tokens, eos),
                        "marian": lambda r: decode_marian(marian, batches, beam, new_tokens, eos)}, repeats)
    runs = {k: [speed for speed, _ in v] for k, v in done.items()}
    b = {k: max(v) for k, v in runs.items()}
    a, m = _sentences(done["ours"][-1][1]), _sentences(done["marian"][-1][1])
    same = sum(x == y for x, y in zip(a, m, strict=True)) / len(a)
    mean_tokens = sum(map(len, a)) / len(a)
    pairs = sorted(o / m for o, m in zip(runs["ours"], runs["marian"], strict=True))  # one per repeat
    median = statistics.median(pairs)
    name = "greedy" if beam == 1 else f"beam{beam}"
    print(f"decoding {name:>6} batch {batch:>3} sentences/s (best of {repeats}): attnkit {b['ours']:.1f}  HF "
          f"MarianMTModel generate {b['marian']:.1f}  ratio {b['ours'] / b['marian']:.2f}, per repeat "
          f"{', '.join(f'{r:.2f}' for r in pairs)} (median {median:.2f}; target >= 1.5); identical outputs "
          f"{same:.1%}, mean length {mean_tokens:.1f}", flush=True)
    return {**b, "ratio": b["ours"] / b["marian"], "repeat_ratios": pairs, "median_ratio": median, "runs": runs,
            "same_output": same, "mean_tokens": mean_tokens}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--max-tokens", type=int, default=2048, help="training batch size in tokens")
    p.add_argument("--train-steps", type=int, default=15)
    p.add_argument("--precisions", default="fp32", help="training precisions measured: fp32, bf16 or both "
                   "(bf16: autocast on both sides; pays only where the CPU has native bf16)")
    p.add_argument("--sentences", type=int, default=1000, help="test sentences decoded")
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--batch", default="64", help="sentences per decoding batch, or a comma-separated list")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--parts", default="train,greedy,beam5", help="comma-separated subset of train,greedy,beam5")
    p.add_argument("--run", help="decode with this translation run's weights (in both models) and stop at EOS")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    torch.manual_seed(0)
    train = read_parallel(args.data, "train", "de", "en")
    test = read_parallel(args.data, "test_2016_flickr", "de", "en")
    if args.run:  # the trained model, its tokenizer and shapes
        translator = open_run(args.run, family="translation").inference
        tok, trained = translator.src_tok, translator.model.eval()
        cfg = dataclasses.replace(trained.config, dropout=0.1)
    else:
        tok = SubwordTokenizer.train(train.src + train.tgt, args.vocab_size)
        cfg = TransformerConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size,
                                d_model=args.d_model, n_heads=args.heads, d_ff=args.d_ff,
                                n_encoder_layers=args.layers, n_decoder_layers=args.layers, dropout=0.1)
    src_ids, tgt_ids = tok.encode_batch(train.src), tok.encode_batch(train.tgt)
    lengths = [max(len(s), len(t) + 1) for s, t in zip(src_ids, tgt_ids, strict=True)]
    batches = [make_batch(src_ids, tgt_ids, b) for b in token_batches(lengths, args.max_tokens, 0, 0)]
    ours, peer = Transformer(cfg), TorchTransformer(cfg)
    res: dict = {"shape": vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if "train" in args.parts:
        res["train_tokens_per_s"] = {}
        for prec in args.precisions.split(","):
            runs = interleaved({"ours": lambda r, p=prec: train_speed(ours, batches, args.train_steps, p),
                                "torch": lambda r, p=prec: train_speed(peer, batches, args.train_steps, p)},
                               args.repeats)
            for r, (a, t) in enumerate(zip(runs["ours"], runs["torch"], strict=True)):
                print(f"  training {prec} repeat {r}: attnkit {a:.0f}  torch {t:.0f}  ratio {a / t:.3f}", flush=True)
            best = {k: max(v) for k, v in runs.items()}
            paired = statistics.median(a / t for a, t in zip(runs["ours"], runs["torch"], strict=True))
            res["train_tokens_per_s"][prec] = {**best, "ratio": best["ours"] / best["torch"],
                                               "median_paired_ratio": paired, "runs": runs}
            print(f"training {prec} tokens/s (best of {args.repeats}): attnkit {best['ours']:.0f}  "
                  f"torch.nn.Transformer {best['torch']:.0f}  ratio {best['ours'] / best['torch']:.3f} (median of "
                  f"paired repeats {paired:.3f}; target >= 1.2)", flush=True)
        tp = res["train_tokens_per_s"]
        if "fp32" in tp and "bf16" in tp:
            print(f"attnkit bf16 / attnkit fp32 (best of each): {tp['bf16']['ours'] / tp['fp32']['ours']:.3f}; "
                  f"torch.nn.Transformer bf16 / fp32: {tp['bf16']['torch'] / tp['fp32']['torch']:.3f}", flush=True)

    # Decoding: attnkit and Marian hold the same weights (random, or the run's), so their outputs can be
    # compared; both get the same batches of test sentences, sorted by source length.
    ours = trained if args.run else Transformer(dataclasses.replace(cfg, dropout=0.0)).eval()
    marian = marian_from(ours)
    test_ids = [s[: cfg.max_len] for s in tok.encode_batch(test.src[: args.sentences])]
    test_ids = [s for s in test_ids if s]
    eos = bool(args.run)  # random weights: EOS disabled, every sentence decodes exactly --new-tokens tokens
    new_tokens = None if args.run else args.new_tokens
    res["decode_sentences_per_s"] = {"eos": eos, "new_tokens": new_tokens,
                                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}
    for batch in (int(b) for b in args.batch.split(",")):
        dec_batches = [pad_sequences([test_ids[i] for i in idx], PAD_ID)
                       for idx in sorted_batches([len(s) for s in test_ids], 10**9, max_batch=batch)]
        res["decode_sentences_per_s"][f"batch{batch}"] = {
            name: compare_decoding(ours, marian, dec_batches, beam, new_tokens, eos, args.repeats, batch)
            for name, beam in (("greedy", 1), ("beam5", 5)) if name in args.parts}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
