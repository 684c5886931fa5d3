"""Tiny pretrained-translation directories built at test time, as transformers writes them: SentencePiece
models trained on Multi30k text, the tokenizers of transformers saved with save_pretrained, and random
MarianMTModel / M2M100ForConditionalGeneration weights (no downloads). Shared by the tokenizer, converter,
task and CLI tests."""

from __future__ import annotations

import gzip
import io
import json
from functools import cache
from pathlib import Path

import sentencepiece
import torch
import transformers

transformers.logging.set_verbosity_error()
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"
NLLB_CODES = ["eng_Latn", "deu_Latn", "fra_Latn", "spa_Latn"]


@cache
def multi30k(lang: str, split: str = "train") -> tuple[str, ...]:
    with gzip.open(DATA / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return tuple(line.rstrip("\n") for line in f)


def train_spm(lines, vocab_size: int, model_type: str = "unigram", **kw) -> bytes:
    """A SentencePiece model (its serialized bytes) trained on ``lines``."""
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
                                             model_type=model_type, minloglevel=2, **kw)
    return buf.getvalue()


def _pieces(model: bytes) -> list[str]:
    sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    return [sp.IdToPiece(i) for i in range(sp.GetPieceSize()) if not (sp.IsControl(i) or sp.IsUnknown(i))]


def _random_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights large enough that the logits are far from uniform (HF's init_std 0.02 makes near-ties)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.1) + (1.0 if "norm.weight" in name
                                                                                        else 0.0))
    return model.eval()


def marian_dir(out: Path, *, separate: bool = False, targets: tuple[str, ...] = (), tie: bool = True,
               activation: str = "swish", seed: int = 0, layers: int = 2, max_len: int = 64,
               eos_bias: float = 4.5) -> Path:
    """A Marian directory (de -> en): source.spm, target.spm, vocab.json (and target_vocab.json when
    ``separate``), with ``>>xx<<`` codes for the ``targets`` of a multi-target model. ``eos_bias`` raises
    the EOS logit so that the random model ends some sentences early and others at the length limit."""
    out.mkdir(parents=True, exist_ok=True)
    src, tgt = train_spm(multi30k("de")[:4000], 400), train_spm(multi30k("en")[:4000], 300)
    (out / "source.spm").write_bytes(src)
    (out / "target.spm").write_bytes(tgt)

    def vocab(pieces: list[str], size: int = 0) -> dict[str, int]:
        items = list(dict.fromkeys(["</s>", "<unk>", *[f">>{t}<<" for t in targets], *pieces]))
        items += [f"<unused{i}>" for i in range(size - 1 - len(items))]  # both sides one size: pad is the last id
        return {p: i for i, p in enumerate([*items, "<pad>"])}

    if separate:
        size = 3 + len(targets) + max(len(_pieces(src)), len(_pieces(tgt)))
        (out / "vocab.json").write_text(json.dumps(vocab(_pieces(src), size)))
        (out / "target_vocab.json").write_text(json.dumps(vocab(_pieces(tgt), size)))
    else:
        (out / "vocab.json").write_text(json.dumps(vocab(_pieces(src) + _pieces(tgt))))
    tok = transformers.MarianTokenizer(str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json"),
                                       target_vocab_file=str(out / "target_vocab.json") if separate else None,
                                       separate_vocabs=separate)
    tok.save_pretrained(out)
    v_src = len(json.loads((out / "vocab.json").read_text()))
    v_tgt = len(json.loads((out / "target_vocab.json").read_text())) if separate else v_src
    pad = v_src - 1
    cfg = transformers.MarianConfig(
        vocab_size=v_src, decoder_vocab_size=v_tgt, d_model=32, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=max_len, activation_function=activation, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, scale_embedding=True, pad_token_id=pad, eos_token_id=0, decoder_start_token_id=pad,
        forced_eos_token_id=0, share_encoder_decoder_embeddings=not separate, tie_word_embeddings=tie,
        bad_words_ids=[[pad]], max_length=max_len, num_beams=4)
    torch.manual_seed(seed)
    model = _random_weights(transformers.MarianMTModel(cfg), seed)
    with torch.no_grad():
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape) * 0.5)
        model.final_logits_bias[0, 0] += eos_bias
    # What OPUS-MT checkpoints' generation_config.json says (save_pretrained keeps no generation field here).
    model.generation_config.update(bad_words_ids=[[pad]], max_length=max_len, num_beams=4)
    model.save_pretrained(out)
    return out


def m2m100_dir(out: Path, *, seed: int = 0, layers: int = 2, max_len: int = 64, eos_bias: float = 6.0) -> Path:
    """An M2M-100 directory: sentencepiece.bpe.model + vocab.json (fairseq's layout: <s> <pad> </s> <unk>
    first), transformers' 100 language tokens after it."""
    out.mkdir(parents=True, exist_ok=True)
    model_bytes = train_spm(multi30k("de")[:3000] + multi30k("en")[:3000], 600, "bpe")
    (out / "sentencepiece.bpe.model").write_bytes(model_bytes)
    items = ["<s>", "<pad>", "</s>", "<unk>", *_pieces(model_bytes)]
    (out / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(dict.fromkeys(items))}))
    tok = transformers.M2M100Tokenizer(str(out / "vocab.json"), str(out / "sentencepiece.bpe.model"),
                                       src_lang="de", tgt_lang="en")
    tok.save_pretrained(out)
    # The model's vocabulary: vocab.json, the language tokens, 8 "madeup words" (as facebook/m2m100_418M's).
    return _m2m_model(out, tok.vocab_size + len(tok.lang_code_to_id) + 8, seed, layers, max_len, eos_bias)


def nllb_dir(out: Path, *, seed: int = 0, layers: int = 2, max_len: int = 64, eos_bias: float = 5.5) -> Path:
    """An NLLB directory: tokenizer.json converted by transformers from a SentencePiece BPE model, with a
    few NLLB language codes."""
    out.mkdir(parents=True, exist_ok=True)
    spm_dir = out / "spm"
    spm_dir.mkdir()
    (spm_dir / "sentencepiece.bpe.model").write_bytes(train_spm(multi30k("de")[:3000] + multi30k("en")[:3000], 600,
                                                                "bpe"))
    tok = transformers.NllbTokenizer.from_pretrained(spm_dir, src_lang="deu_Latn", extra_special_tokens=NLLB_CODES)
    tok.save_pretrained(out)
    return _m2m_model(out, len(tok), seed, layers, max_len, eos_bias)


def _m2m_model(out: Path, vocab: int, seed: int, layers: int, max_len: int, eos_bias: float) -> Path:
    cfg = transformers.M2M100Config(
        vocab_size=vocab, d_model=32, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=max_len,
        activation_function="relu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
        max_length=max_len, num_beams=4)
    torch.manual_seed(seed)
    model = _random_weights(transformers.M2M100ForConditionalGeneration(cfg), seed)
    with torch.no_grad():  # the tied output has no bias: move the final norm's bias along EOS's embedding
        e = model.model.shared.weight[2]
        model.model.decoder.layer_norm.bias += eos_bias * e / e.dot(e)
    model.generation_config.update(max_length=max_len, num_beams=4, forced_eos_token_id=2, early_stopping=True)
    model.save_pretrained(out)
    return out


def compare_with_generate(hf: transformers.PreTrainedModel, translator, sentences, *, src_lang: str | None = None,
                          tgt_lang: str | None = None, extra_len: int = 10) -> tuple[dict[str, list[int]], int]:
    """Greedy, beam 4 and beam 4 with length penalty 0.6 on ``sentences`` (one batch) by attnkit's Translator
    and by ``generate`` (``early_stopping=True``: attnkit's rule, a sentence is done with 4 finished
    hypotheses), at the Translator's length limit; asserts they are token-identical and returns the lengths
    of attnkit's outputs per setting and the length limit."""
    tok, prefix = translator.languages(src_lang, tgt_lang)
    ids = translator.encode_sources(sentences, tokenizer=tok)
    s = max(map(len, ids))
    budget = min(translator.max_len - 1, s + extra_len)
    sp = translator.specials
    x = torch.full((len(ids), s), sp.pad)
    for i, row in enumerate(ids):
        x[i, : len(row)] = torch.tensor(row)
    lengths = {}
    for beam, alpha in ((1, 1.0), (4, 1.0), (4, 0.6)):
        ours = translator.translate_ids(ids, beam_size=beam, length_penalty=alpha, max_tokens=10**6,
                                        extra_len=extra_len, prefix=prefix)
        forced = {"forced_bos_token_id": prefix[0]} if prefix else {}
        with torch.no_grad():
            out = hf.generate(input_ids=x, attention_mask=(x != sp.pad).long(), num_beams=beam, length_penalty=alpha,
                              max_new_tokens=budget, early_stopping=True, do_sample=False, **forced)
        theirs = []
        for row in out[:, 1:].tolist():  # without the decoder's start token
            theirs.append(row[: row.index(sp.eos)] if sp.eos in row else [t for t in row if t != sp.pad])
        assert ours == theirs, f"beam {beam}, length penalty {alpha}"
        lengths[f"beam{beam}-lp{alpha}"] = [len(r) for r in ours]
    return lengths, budget
