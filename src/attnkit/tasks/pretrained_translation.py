"""Pretrained translation checkpoints as translation runs: Hugging Face Marian (OPUS-MT) and M2M-100 /
NLLB-200 directories, registered with :func:`attnkit.tasks.runs.open_run` (config.json ``model_type``
"marian", "m2m_100"), and the export of an attnkit translation run as a Marian directory.

Both become the shared :class:`~attnkit.tasks.translation.Translator` over the shared Transformer (its
options set by the converters of :mod:`attnkit.models.hf`), with the checkpoint's special tokens and
generation settings: the decoder's start token, tokens never generated (``bad_words_ids`` of one token),
EOS forced at the length limit (``forced_eos_token_id``), and for M2M-100 / NLLB the target language as the
forced first token. So ``attnkit translate run DIR`` and ``open_run(DIR).translate([...])`` give the tokens
``generate`` gives (tests/tasks/test_pretrained_translation.py)::

    run = open_run("opus-mt-de-en")
    run.translate(["Ein Hund läuft."], beam_size=4)
    open_run("nllb-200-distilled-600M").translate(["Ein Hund läuft."], src_lang="deu_Latn", tgt_lang="fra_Latn")

An exported attnkit run (:func:`export_marian`) keeps attnkit's BPE tokenizer as ``tokenizer.json`` (which
transformers' ``AutoTokenizer`` reads); opened again it is the same model, tokenizer and translations.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from attnkit.errors import CheckpointError
from attnkit.models.hf.common import read_config
from attnkit.models.hf.m2m100 import load_m2m100
from attnkit.models.hf.marian import generation_config, load_marian, save_marian
from attnkit.models.transformer import Transformer
from attnkit.tasks.precision import set_precision
from attnkit.tasks.runs import HF_CONFIG_FILE, Run, open_run, register_hf_model_type
from attnkit.tasks.translation import FAMILY, Specials, Translator, load_run
from attnkit.tokenizers.spm import CONFIG_FILE, M2M100Tokenizer, MarianTokenizer, NllbTokenizer, tokenizer_config
from attnkit.tokenizers.subword import SubwordTokenizer, tokenizer_files
from attnkit.training.checkpoint import RUN_FILE

TARGET_TOKENIZER = "target_tokenizer.json"  # an exported run with one vocabulary per language


def specials_of(model: Transformer, path: Path) -> Specials:
    """The model's special tokens and the generation rules of its directory (generation_config.json)."""
    c, gen = model.config, generation_config(path)
    bad = gen.get("bad_words_ids") or []
    banned = tuple(int(w[0]) for w in bad if isinstance(w, list) and len(w) == 1)
    forced = gen.get("forced_eos_token_id")
    return Specials(start=c.bos_id, eos=c.eos_id, pad=c.pad_id, banned=banned,
                    force_eos=forced is not None and c.eos_id in (forced if isinstance(forced, list) else [forced]))


def _check_vocab(path: Path, model: Transformer, src_size: int, tgt_size: int) -> None:
    c = model.config
    for side, tok, mod in (("source", src_size, c.src_vocab_size), ("target", tgt_size, c.tgt_vocab_size)):
        if tok > mod:
            raise CheckpointError(f"{path}: the {side} tokenizer has {tok} tokens but the model's vocabulary "
                                  f"{mod} (config.json vocab_size)")


def _translation_run(path: Path, model: Transformer, src_tok, tgt_tok) -> Run:  # noqa: ANN001
    meta = {**read_config(path), **tokenizer_config(path).get("attnkit", {})}  # an export names its languages
    translator = Translator(model, src_tok, tgt_tok, model.config.max_len, meta, specials_of(model, path))
    return Run(FAMILY, path, model, src_tok, translator, translator.meta, source="huggingface",
               target_tokenizer=tgt_tok)


@register_hf_model_type("marian")
def open_marian_dir(path: Path) -> Run:
    """A Marian directory: MarianTokenizer's files (source.spm, target.spm, vocab.json), or the tokenizer.json
    of a run exported by attnkit."""
    path = Path(path)
    model = load_marian(path)
    if (path / "source.spm").is_file() or not (path / "tokenizer.json").is_file():
        tok = MarianTokenizer.load(path)
        _check_vocab(path, model, tok.vocab_size, tok.target_vocab_size)
        return _translation_run(path, model, tok, tok)
    src = SubwordTokenizer.load(path / "tokenizer.json")
    tgt = SubwordTokenizer.load(path / TARGET_TOKENIZER) if (path / TARGET_TOKENIZER).is_file() else src
    _check_vocab(path, model, src.vocab_size, tgt.vocab_size)
    return _translation_run(path, model, src, tgt)


@register_hf_model_type("m2m_100")
def open_m2m100_dir(path: Path) -> Run:
    """An M2M-100 (M2M100Tokenizer: vocab.json + sentencepiece.bpe.model) or NLLB-200 (tokenizer.json)
    directory."""
    path = Path(path)
    model = load_m2m100(path)
    cls = tokenizer_config(path).get("tokenizer_class", "")
    nllb = "Nllb" in cls or ("M2M100" not in cls and not (path / "vocab.json").is_file())
    tok = NllbTokenizer.load(path) if nllb else M2M100Tokenizer.load(path)
    _check_vocab(path, model, tok.vocab_size, tok.vocab_size)
    return _translation_run(path, model, tok, tok)


def export_marian(run_dir: str | Path, out: str | Path) -> Path:
    """Write the attnkit translation run ``run_dir`` as a Marian directory ``out`` (config.json,
    generation_config.json, model.safetensors, tokenizer.json [+ target_tokenizer.json], tokenizer_config.json)
    that MarianMTModel and AutoTokenizer load. CheckpointError for a run that is not a post-norm Transformer."""
    translator = load_run(run_dir)
    model = translator.model
    if not isinstance(model, Transformer):
        raise CheckpointError(f"{run_dir}: only Transformer runs can be written as Marian models "
                              f"({translator.meta.get('arch')!r} run)")
    out = Path(out)
    save_marian(model, out)
    meta = translator.meta
    src_file, tgt_file = tokenizer_files(meta["src"], meta["tgt"], meta["joint"])
    shutil.copyfile(Path(run_dir) / src_file, out / "tokenizer.json")
    if tgt_file != src_file:
        shutil.copyfile(Path(run_dir) / tgt_file, out / TARGET_TOKENIZER)
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "bos_token": "<s>",
           "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": model.config.max_len,
           "attnkit": {"src": meta["src"], "tgt": meta["tgt"], "joint": meta["joint"]}}
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return out


def open_translator(path: str | Path, dtype: str = "fp32") -> Translator:
    """The Translator of an attnkit translation run or of a Hugging Face Marian / M2M-100 / NLLB directory;
    CheckpointError naming what the directory is otherwise."""
    return open_translation(path, dtype).inference


def open_translation(path: str | Path, dtype: str = "fp32") -> Run:
    """The Run of :func:`open_translator` (in ``dtype``: see :func:`attnkit.tasks.runs.open_run`)."""
    path = Path(path)
    if (path / RUN_FILE).is_file() or not (path / HF_CONFIG_FILE).is_file():
        return open_run(path, family=FAMILY, dtype=dtype)
    run = open_run(path)
    if not run.can("translate"):
        raise CheckpointError(f"{path}: a Hugging Face {run.meta.get('model_type')!r} model, not a translation "
                              "model (attnkit translates with marian and m2m_100 directories)")
    return set_precision(run, dtype)
