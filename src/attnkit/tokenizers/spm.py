"""The SentencePiece tokenizers of pretrained translation checkpoints: Marian (OPUS-MT), M2M-100 and NLLB-200,
encoding and decoding exactly as ``transformers``' MarianTokenizer, M2M100Tokenizer and NllbTokenizer do
(the same ids on real text; checked in tests/tokenizers/test_spm.py).

* Marian: ``source.spm`` / ``target.spm`` (SentencePiece models) and ``vocab.json`` (piece -> model id; the
  SentencePiece ids are not the model's); ``target_vocab.json`` when the two sides have separate
  vocabularies. A source is its pieces + ``</s>``; a multi-target model reads the target language as a
  ``>>xx<<`` token before them.
* M2M-100: ``sentencepiece.bpe.model`` + ``vocab.json``; the language tokens ``__xx__`` follow the
  vocabulary. A source is ``__src__`` pieces ``</s>``; the decoder is forced to start with ``__tgt__``.
* NLLB-200: ``tokenizer.json`` (its language codes ``eng_Latn``... are added tokens); the same layout
  (``legacy_behaviour``: pieces ``</s>`` ``src``).

Each offers what the Translator needs: ``encode_batch(texts) -> ids`` (the source side, special tokens
included), ``decode_batch(ids) -> texts`` (the target side, special tokens dropped), ``tokens(ids)``,
``vocab_size`` and ``languages(src_lang, tgt_lang) -> (tokenizer, forced target prefix)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import sentencepiece
from tokenizers import Tokenizer

from attnkit.errors import CheckpointError, InputError

SPIECE_UNDERLINE = "▁"
CONFIG_FILE = "tokenizer_config.json"
# M2M-100's language codes: fixed lists in fairseq and transformers (their tokens follow vocab.json).
M2M100_LANGUAGES = {
    "m2m100": (
        "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl gu ha he hi hr ht "
        "hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps "
        "pt ro ru sd si sk sl so sq sr ss su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu"
    ).split(),
    "wmt21": "en ha is ja cs ru zh de".split(),
}


def load_spm(path: Path) -> sentencepiece.SentencePieceProcessor:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a SentencePiece model of the tokenizer)")
    try:
        return sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable SentencePiece model ({exc})") from None


def read_json(path: Path, what: str = "JSON file") -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def tokenizer_config(directory: Path) -> dict:
    """tokenizer_config.json of ``directory`` ({} when there is none)."""
    return read_json(directory / CONFIG_FILE) if (directory / CONFIG_FILE).is_file() else {}


def split_specials(text: str, specials: Sequence[str]) -> list[str]:
    """``text`` cut around each occurrence of a special token (leftmost, longest first), as transformers'
    added-token trie cuts it; empty pieces dropped."""
    if not specials:
        return [text] if text else []
    pattern = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
    parts, pos = [], 0
    for m in pattern.finditer(text):
        parts += [text[pos : m.start()], m.group()]
        pos = m.end()
    parts.append(text[pos:])
    return [p for p in parts if p]


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (applied when tokenizer_config.json asks for it)."""
    for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(old, new)
    return text


def _unknown_language(code: str, known: Sequence[str], flag: str) -> InputError:
    shown = ", ".join(sorted(known)[:12]) + (", ..." if len(known) > 12 else "")
    return InputError(f"{flag} {code!r}: the model has no such language code (it has {len(known)}: {shown})")


class _Vocab:
    """What the three tokenizers share: batch encoding/decoding around ``encode`` / ``decode``."""

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]


@dataclass
class MarianTokenizer(_Vocab):
    """Marian's tokenizer (see the module docstring). ``prefix``: ids put before every source (the target
    language's ``>>xx<<`` token, set by :meth:`languages`)."""

    source: sentencepiece.SentencePieceProcessor
    target: sentencepiece.SentencePieceProcessor
    encoder: dict[str, int]
    target_encoder: dict[str, int] | None = None
    unk: str = "<unk>"
    eos: str = "</s>"
    pad: str = "<pad>"
    clean_up: bool = False
    prefix: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for tok in (self.unk, self.eos, self.pad):
            if tok not in self.encoder:
                raise CheckpointError(f"vocab.json lacks the special token {tok!r}")
        self.decoder = {v: k for k, v in (self.target_encoder or self.encoder).items()}
        self.specials = (self.eos, self.unk, self.pad)
        self.special_ids = {self.encoder[t] for t in self.specials}
        self.eos_id, self.pad_id, self.unk_id = (self.encoder[t] for t in (self.eos, self.pad, self.unk))
        self.language_codes = [] if self.target_encoder is not None else [
            k for k in self.encoder if k.startswith(">>") and k.endswith("<<")]

    @classmethod
    def load(cls, directory: str | Path) -> MarianTokenizer:
        d = Path(directory)
        cfg = tokenizer_config(d)
        separate = bool(cfg.get("separate_vocabs", False))
        names = {k: str(cfg.get(k) or default) for k, default in (("unk_token", "<unk>"), ("eos_token", "</s>"),
                                                                   ("pad_token", "<pad>"))}
        return cls(load_spm(d / "source.spm"), load_spm(d / "target.spm"),
                   read_json(d / "vocab.json", "the vocabulary of a Marian tokenizer"),
                   read_json(d / "target_vocab.json", "the target vocabulary") if separate else None,
                   names["unk_token"], names["eos_token"], names["pad_token"],
                   bool(cfg.get("clean_up_tokenization_spaces", False)))

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    @property
    def target_vocab_size(self) -> int:
        return len(self.target_encoder or self.encoder)

    def pieces(self, text: str) -> list[str]:
        """The source-side tokens of ``text`` (MarianTokenizer.tokenize)."""
        out: list[str] = []
        for part in split_specials(text, self.specials):
            if part in self.specials:
                out.append(part)
                continue
            if part.startswith(">>") and (end := part.find("<<")) != -1:  # a target-language code
                out.append(part[: end + 2])
                part = part[end + 2 :]
            out += self.source.encode(part, out_type=str)
        return out

    def encode(self, text: str) -> list[int]:
        return [*self.prefix, *(self.encoder.get(p, self.unk_id) for p in self.pieces(text)), self.eos_id]

    def encode_target(self, text: str) -> list[int]:
        """Target-side ids of ``text``, no EOS (MarianTokenizer's ``text_target`` encoding without it)."""
        vocab = self.target_encoder or self.encoder
        return [vocab.get(p, self.unk_id) for p in self.target.encode(text, out_type=str)]

    def tokens(self, ids: Sequence[int]) -> list[str]:
        spm = self.target if self.target_encoder is not None else self.source
        return [self.decoder.get(i) or spm.IdToPiece(i) or self.unk for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> text as ``decode(ids, skip_special_tokens=True)`` (SentencePiece's detokenization)."""
        spm = self.target if self.target_encoder is not None else self.source
        out, run = "", []
        for tok in self.tokens([i for i in ids if i not in self.special_ids]):
            if tok in self.specials:
                out += spm.decode_pieces(run) + tok + " "
                run = []
            else:
                run.append(tok)
        out = (out + spm.decode_pieces(run)).replace(SPIECE_UNDERLINE, " ").strip()
        return clean_up_tokenization(out) if self.clean_up else out

    def languages(self, src_lang: str | None, tgt_lang: str | None) -> tuple[MarianTokenizer, tuple[int, ...]]:
        """The tokenizer that writes ``>>tgt_lang<<`` before each source (a multi-target model's choice of
        language); Marian has no source-language code and forces no target token."""
        if src_lang is not None:
            raise InputError("--src-lang: a Marian model reads any of its source languages without a code")
        if tgt_lang is None:
            return self, ()
        code = tgt_lang if tgt_lang.startswith(">>") else f">>{tgt_lang}<<"
        if code not in self.language_codes:
            if not self.language_codes:
                raise InputError(f"--tgt-lang {tgt_lang!r}: this Marian model has one target language (no >>xx<< "
                                 "codes in vocab.json)")
            raise _unknown_language(tgt_lang, [c[2:-2] for c in self.language_codes], "--tgt-lang")
        return replace(self, prefix=(self.encoder[code],)), ()


@dataclass
class M2M100Tokenizer(_Vocab):
    """M2M-100's tokenizer: ``sp`` + ``encoder`` (vocab.json), language tokens ``__xx__`` after it.
    ``src_lang``: the code written before each source (default "en", as transformers')."""

    sp: sentencepiece.SentencePieceProcessor
    encoder: dict[str, int]
    codes: Sequence[str]
    src_lang: str = "en"
    specials_map: dict[str, str] | None = None
    clean_up: bool = False

    def __post_init__(self) -> None:
        names = {"bos": "<s>", "eos": "</s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>",
                 **(self.specials_map or {})}
        self.unk_token = names["unk"]
        for tok in names.values():
            if tok not in self.encoder:
                raise CheckpointError(f"vocab.json lacks the special token {tok!r}")
        n = len(self.encoder)
        self.lang_ids = {f"__{c}__": n + i for i, c in enumerate(self.codes)}
        self.decoder = {v: k for k, v in self.encoder.items()} | {i: t for t, i in self.lang_ids.items()}
        self.eos_id, self.unk_id, self.pad_id = (self.encoder[names[k]] for k in ("eos", "unk", "pad"))
        self.specials = tuple(dict.fromkeys([*names.values(), *self.lang_ids]))
        self.special_ids = {self.encoder[t] for t in names.values()} | set(self.lang_ids.values())
        self.language_codes = list(self.codes)
        self.lang_id(self.src_lang, "--src-lang")

    @classmethod
    def load(cls, directory: str | Path) -> M2M100Tokenizer:
        d = Path(directory)
        cfg = tokenizer_config(d)
        codes = M2M100_LANGUAGES.get(str(cfg.get("language_codes", "m2m100")))
        if codes is None:
            raise CheckpointError(f"{d / CONFIG_FILE}: unknown language_codes {cfg.get('language_codes')!r}")
        spm_name = "sentencepiece.bpe.model" if (d / "sentencepiece.bpe.model").is_file() else "spm.model"
        names = {k: str(cfg[k + "_token"]) for k in ("bos", "eos", "sep", "pad", "unk") if cfg.get(k + "_token")}
        return cls(load_spm(d / spm_name), read_json(d / "vocab.json", "the vocabulary of an M2M-100 tokenizer"),
                   codes, str(cfg.get("src_lang") or "en"), names, bool(cfg.get("clean_up_tokenization_spaces")))

    @property
    def vocab_size(self) -> int:
        return len(self.encoder) + len(self.lang_ids)

    def lang_id(self, code: str, flag: str) -> int:
        token = code if code.startswith("__") else f"__{code}__"
        if token not in self.lang_ids:
            raise _unknown_language(code, self.codes, flag)
        return self.lang_ids[token]

    def encode(self, text: str) -> list[int]:
        ids = [self.lang_id(self.src_lang, "--src-lang")]
        for part in split_specials(text, self.specials):
            if part in self.specials:
                ids.append(self.lang_ids.get(part, self.encoder.get(part, self.unk_id)))
            else:
                ids += [self.encoder.get(p, self.unk_id) for p in self.sp.encode(part, out_type=str)]
        return ids + [self.eos_id]

    def encode_target(self, text: str) -> list[int]:
        return [self.encoder.get(p, self.unk_id) for p in self.sp.encode(text, out_type=str)]

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.decoder.get(i, self.unk_token) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        out, run = "", []
        for tok in self.tokens([i for i in ids if i not in self.special_ids]):
            if tok in self.specials:
                out += self.sp.decode(run) + tok
                run = []
            else:
                run.append(tok)
        out = (out + self.sp.decode(run)).strip()
        return clean_up_tokenization(out) if self.clean_up else out

    def languages(self, src_lang: str | None, tgt_lang: str | None) -> tuple[M2M100Tokenizer, tuple[int, ...]]:
        """The tokenizer for ``src_lang`` and the forced first target token of ``tgt_lang``."""
        tok = self if src_lang is None else replace(self, src_lang=src_lang)
        tok.lang_id(tok.src_lang, "--src-lang")
        if tgt_lang is None:
            raise InputError("--tgt-lang is needed: a multilingual model translates into the language it is told")
        return tok, (self.lang_id(tgt_lang, "--tgt-lang"),)


_NLLB_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


@dataclass
class NllbTokenizer(_Vocab):
    """NLLB-200's tokenizer from ``tokenizer.json``: [src_lang] pieces [</s>] (legacy: pieces [</s>, src_lang])."""

    tokenizer: Tokenizer
    src_lang: str = "eng_Latn"
    legacy: bool = False
    eos: str = "</s>"
    clean_up: bool = False

    def __post_init__(self) -> None:
        added = self.tokenizer.get_added_tokens_decoder()
        self.special_ids = {i for i, t in added.items() if t.special}
        self.language_codes = [t.content for t in added.values() if _NLLB_CODE.match(t.content)]
        eos_id = self.tokenizer.token_to_id(self.eos)
        if eos_id is None:
            raise CheckpointError(f"tokenizer.json lacks the end-of-sentence token {self.eos!r}")
        self.eos_id = eos_id
        self.pad_id = self.tokenizer.token_to_id("<pad>")
        self.lang_id(self.src_lang, "--src-lang")

    @classmethod
    def load(cls, directory: str | Path) -> NllbTokenizer:
        d = Path(directory)
        cfg = tokenizer_config(d)
        if not (d / "tokenizer.json").is_file():
            raise CheckpointError(f"{d / 'tokenizer.json'}: missing (attnkit reads NLLB's tokenizer from "
                                  "tokenizer.json)")
        try:
            tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        except Exception as exc:  # the Rust library raises plain Exception
            raise CheckpointError(f"{d / 'tokenizer.json'}: not a readable tokenizer ({exc})") from None
        return cls(tok, str(cfg.get("src_lang") or "eng_Latn"), bool(cfg.get("legacy_behaviour", False)),
                   str(cfg.get("eos_token") or "</s>"), bool(cfg.get("clean_up_tokenization_spaces", False)))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def lang_id(self, code: str, flag: str) -> int:
        i = self.tokenizer.token_to_id(code) if code in self.language_codes else None
        if i is None:
            raise _unknown_language(code, self.language_codes, flag)
        return i

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        lang = self.lang_id(self.src_lang, "--src-lang")
        return [*ids, self.eos_id, lang] if self.legacy else [lang, *ids, self.eos_id]

    def encode_target(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.id_to_token(i) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        out = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return clean_up_tokenization(out) if self.clean_up else out

    def languages(self, src_lang: str | None, tgt_lang: str | None) -> tuple[NllbTokenizer, tuple[int, ...]]:
        tok = self if src_lang is None else replace(self, src_lang=src_lang)
        if tgt_lang is None:
            raise InputError("--tgt-lang is needed: a multilingual model translates into the language it is told")
        return tok, (self.lang_id(tgt_lang, "--tgt-lang"),)
