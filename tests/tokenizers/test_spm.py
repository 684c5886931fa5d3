"""The SentencePiece tokenizers of pretrained translation models (attnkit.tokenizers.spm) against
transformers' MarianTokenizer, M2M100Tokenizer and NllbTokenizer on 1,000 real Multi30k sentences: the same
ids, the same decoded text, the same language codes; SentencePiece models trained here on Multi30k."""

from __future__ import annotations

import pytest
import transformers

from _pretrained_mt import m2m100_dir, marian_dir, multi30k, nllb_dir  # tests/_pretrained_mt.py
from attnkit.errors import CheckpointError, InputError
from attnkit.tokenizers.spm import M2M100Tokenizer, MarianTokenizer, NllbTokenizer, split_specials

N = 1000
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    # German sources from the validation and test splits (the SentencePiece models saw only training text).
    return list(multi30k("de", "val") + multi30k("de", "test_2016_flickr"))[:N]


@pytest.fixture(scope="module")
def marian(tmp_path_factory):  # noqa: ANN201
    d = marian_dir(tmp_path_factory.mktemp("marian"), targets=("fra", "spa"))
    return transformers.MarianTokenizer.from_pretrained(d), MarianTokenizer.load(d)


def test_marian_ids_equal_transformers(marian, sentences) -> None:
    hf, ours = marian
    assert len(sentences) == N
    assert [ours.encode(s) for s in sentences] == [hf(s).input_ids for s in sentences]
    assert ours.encode("") == hf("").input_ids
    odd = "Ein <unk> Hund</s>läuft  am   Strand ☃ >>fra<< nicht"
    assert ours.encode(odd) == hf(odd).input_ids


def test_marian_target_language_prefix(marian, sentences) -> None:
    hf, ours = marian
    fra, prefix = ours.languages(None, "fra")
    assert prefix == ()  # Marian reads the target language on the source side
    assert [fra.encode(s) for s in sentences[:200]] == [hf(">>fra<< " + s).input_ids for s in sentences[:200]]
    assert sorted(ours.language_codes) == [">>fra<<", ">>spa<<"]
    with pytest.raises(InputError, match="'deu'.*no such language code.*fra, spa"):
        ours.languages(None, "deu")


def test_marian_decode_equals_transformers(marian) -> None:
    hf, ours = marian
    for s in multi30k("en", "val")[:N]:
        ids = hf(text_target=s).input_ids
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)


def test_marian_separate_vocabularies(tmp_path) -> None:
    d = marian_dir(tmp_path, separate=True)
    hf, ours = transformers.MarianTokenizer.from_pretrained(d), MarianTokenizer.load(d)
    src = list(multi30k("de", "val")[:300])
    assert [ours.encode(s) for s in src] == [hf(s).input_ids for s in src]
    for s in multi30k("en", "val")[:300]:
        ids = hf(text_target=s).input_ids
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    assert ours.target_encoder != ours.encoder
    with pytest.raises(InputError, match="one target language"):
        ours.languages(None, "fra")


def test_m2m100_ids_and_languages_equal_transformers(tmp_path, sentences) -> None:
    d = m2m100_dir(tmp_path)
    hf, ours = transformers.M2M100Tokenizer.from_pretrained(d, src_lang="de"), M2M100Tokenizer.load(d)
    assert [ours.encode(s) for s in sentences] == [hf(s).input_ids for s in sentences]
    fr, prefix = ours.languages("fr", "en")
    hf.src_lang = "fr"
    assert [fr.encode(s) for s in sentences[:100]] == [hf(s).input_ids for s in sentences[:100]]
    assert prefix == (hf.get_lang_id("en"),)
    for s in multi30k("en", "val")[:300]:
        ids = hf(s).input_ids
        # transformers 5 keeps the language token when skipping special tokens; attnkit drops it, as 4.x did
        assert ours.decode(ids) == hf.decode(ids[1:], skip_special_tokens=True)
    with pytest.raises(InputError, match="--tgt-lang 'xx'"):
        ours.languages("de", "xx")


def test_nllb_ids_and_languages_equal_transformers(tmp_path, sentences) -> None:
    d = nllb_dir(tmp_path)
    hf, ours = transformers.AutoTokenizer.from_pretrained(d, src_lang="deu_Latn"), NllbTokenizer.load(d)
    assert isinstance(hf, transformers.NllbTokenizer)  # transformers 5: the tokenizers-backed ("fast") one
    assert [ours.encode(s) for s in sentences] == [hf(s).input_ids for s in sentences]
    eng, prefix = ours.languages("eng_Latn", "fra_Latn")
    hf.src_lang = "eng_Latn"
    assert [eng.encode(s) for s in sentences[:100]] == [hf(s).input_ids for s in sentences[:100]]
    assert prefix == (hf.convert_tokens_to_ids("fra_Latn"),)
    for s in multi30k("en", "val")[:300]:
        ids = hf(s).input_ids
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    with pytest.raises(InputError, match="--src-lang 'zul_Latn'"):
        ours.languages("zul_Latn", "fra_Latn")


def test_missing_files_name_them(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="source.spm: missing"):
        MarianTokenizer.load(tmp_path)
    with pytest.raises(CheckpointError, match="tokenizer.json: missing"):
        NllbTokenizer.load(tmp_path)


def test_split_specials_is_leftmost_longest() -> None:
    assert split_specials("a</s>b<pad></s>", ["</s>", "<pad>"]) == ["a", "</s>", "b", "<pad>", "</s>"]
    assert split_specials("", ["</s>"]) == []
