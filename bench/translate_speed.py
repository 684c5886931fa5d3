"""Translation speed benchmark, against peers of the same shape in the same process.

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/translate_speed.py --json docs/translate_speed.json

1. Training: target tokens/s of attnkit's Transformer vs a model built from ``torch.nn.Transformer`` (same
   embeddings, sinusoidal positions, tied output projection, masks, optimizer, loss and Multi30k batches).
2. Decoding: sentences/s on Multi30k test_2016_flickr of attnkit (KV-cached greedy and beam 5) vs Hugging
   Face ``MarianMTModel`` with the same shapes and random weights through ``generate`` (greedy, beam 5).
   With random weights EOS is disabled on both sides, so every sentence decodes exactly
   ``--new-tokens`` tokens: the same work for both.
Runs alternate (ours, peer, ours, peer, ...) and the best of ``--repeats`` is kept, which damps the noise
of a shared machine. Ratios > 1 mean attnkit is faster.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnkit.data.batching import pad_sequences, sorted_batches, token_batches  # noqa: E402
from attnkit.data.parallel import read_parallel  # noqa: E402
from attnkit.decoding import GenerationConfig, generate  # noqa: E402
from attnkit.decoding.beam import BeamConfig, beam_search  # noqa: E402
from attnkit.layers import sinusoidal_table  # noqa: E402
from attnkit.models.seq2seq import make_batch  # noqa: E402
from attnkit.models.transformer import Transformer, TransformerConfig  # noqa: E402
from attnkit.tokenizers.subword import BOS_ID, PAD_ID, SubwordTokenizer  # noqa: E402
from attnkit.training.losses import smoothed_cross_entropy  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "multi30k"


class TorchTransformer(nn.Module):
    """The same model from torch.nn.Transformer (the peer of the training benchmark)."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.register_buffer("pe", sinusoidal_table(c.max_len, c.d_model), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.core = nn.Transformer(c.d_model, c.num_heads, c.num_encoder_layers, c.num_decoder_layers, c.d_ff,
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


def train_speed(model: nn.Module, batches: list, steps: int) -> float:
    """Target tokens per second of forward + backward + Adam over ``steps`` batches (after one warm-up)."""
    opt = torch.optim.Adam(model.parameters(), 1e-4, betas=(0.9, 0.98), eps=1e-9)
    model.train()
    tokens, seconds = 0, 0.0
    for i, b in enumerate(batches[: steps + 1]):
        start = time.perf_counter()
        loss = smoothed_cross_entropy(model(b.src, b.tgt_in), b.tgt_out, smoothing=0.1, ignore_index=PAD_ID)
        (loss.total / loss.count).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i > 0:
            seconds += time.perf_counter() - start
            tokens += int(loss.count)
    return tokens / seconds


def marian_like(c: TransformerConfig):  # noqa: ANN201
    from transformers import MarianConfig, MarianMTModel

    mc = MarianConfig(vocab_size=c.src_vocab_size, d_model=c.d_model, encoder_layers=c.num_encoder_layers,
                      decoder_layers=c.num_decoder_layers, encoder_attention_heads=c.num_heads,
                      decoder_attention_heads=c.num_heads, encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff,
                      max_position_embeddings=c.max_len, activation_function="relu", dropout=0.0,
                      attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True, pad_token_id=PAD_ID,
                      eos_token_id=c.eos_id, decoder_start_token_id=BOS_ID, forced_eos_token_id=None,
                      share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    return MarianMTModel(mc).eval()


@torch.no_grad()
def decode_ours(model: Transformer, src_ids: list[list[int]], beam: int, new_tokens: int, batch: int) -> float:
    start = time.perf_counter()
    for idx in sorted_batches([len(s) for s in src_ids], 10**9, max_batch=batch):
        src = pad_sequences([src_ids[i] for i in idx], PAD_ID)
        bos = torch.full((len(idx), 1), BOS_ID)
        session = model.start_decoding(src, new_tokens + 1)
        if beam == 1:
            out = generate(session, bos, GenerationConfig(new_tokens, stop_tokens=(), pad_id=PAD_ID))
        else:
            out = beam_search(session, bos, BeamConfig(beam, 1.0, new_tokens, eos_id=-1, pad_id=PAD_ID)).tokens
        assert out.shape[1] == new_tokens
    return len(src_ids) / (time.perf_counter() - start)


@torch.no_grad()
def decode_marian(model, src_ids: list[list[int]], beam: int, new_tokens: int, batch: int) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for idx in sorted_batches([len(s) for s in src_ids], 10**9, max_batch=batch):
        src = pad_sequences([src_ids[i] for i in idx], PAD_ID)
        out = model.generate(input_ids=src, attention_mask=(src != PAD_ID).long(), num_beams=beam,
                             do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             eos_token_id=None, forced_eos_token_id=None, early_stopping=False,
                             length_penalty=1.0, use_cache=True)
        assert out.shape[1] == new_tokens + 1  # decoder start token + new tokens
    return len(src_ids) / (time.perf_counter() - start)


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
    p.add_argument("--sentences", type=int, default=1000, help="test sentences decoded")
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--batch", type=int, default=64, help="sentences per decoding batch")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    torch.manual_seed(0)
    train = read_parallel(args.data, "train", "de", "en")
    test = read_parallel(args.data, "test_2016_flickr", "de", "en")
    tok = SubwordTokenizer.train(train.src + train.tgt, args.vocab_size)
    cfg = TransformerConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, d_model=args.d_model,
                            num_heads=args.heads, d_ff=args.d_ff, num_encoder_layers=args.layers,
                            num_decoder_layers=args.layers, dropout=0.1)
    src_ids, tgt_ids = tok.encode_batch(train.src), tok.encode_batch(train.tgt)
    lengths = [max(len(s), len(t) + 1) for s, t in zip(src_ids, tgt_ids, strict=True)]
    batches = [make_batch(src_ids, tgt_ids, b) for b in token_batches(lengths, args.max_tokens, 0, 0)]
    ours, peer = Transformer(cfg), TorchTransformer(cfg)
    res: dict = {"shape": vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__}
    best = {"ours": 0.0, "torch": 0.0}
    for _ in range(args.repeats):
        best["ours"] = max(best["ours"], train_speed(ours, batches, args.train_steps))
        best["torch"] = max(best["torch"], train_speed(peer, batches, args.train_steps))
    res["train_tokens_per_s"] = {**best, "ratio": best["ours"] / best["torch"]}
    print(f"training tokens/s: attnkit {best['ours']:.0f}  torch.nn.Transformer {best['torch']:.0f}  "
          f"ratio {best['ours'] / best['torch']:.2f} (target >= 1.0)", flush=True)

    cfg_eval = TransformerConfig(**{**cfg.to_dict(), "dropout": 0.0})
    ours = Transformer(cfg_eval).eval()
    marian = marian_like(cfg_eval)
    test_ids = [s[: cfg.max_len] for s in tok.encode_batch(test.src[: args.sentences])]
    res["decode_sentences_per_s"] = {}
    for name, beam in (("greedy", 1), ("beam5", 5)):
        b = {"ours": 0.0, "marian": 0.0}
        for _ in range(args.repeats):
            b["ours"] = max(b["ours"], decode_ours(ours, test_ids, beam, args.new_tokens, args.batch))
            b["marian"] = max(b["marian"], decode_marian(marian, test_ids, beam, args.new_tokens, args.batch))
        res["decode_sentences_per_s"][name] = {**b, "ratio": b["ours"] / b["marian"]}
        print(f"decoding {name:>6} sentences/s: attnkit {b['ours']:.1f}  HF MarianMTModel generate "
              f"{b['marian']:.1f}  ratio {b['ours'] / b['marian']:.2f} (target >= 1.5)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
