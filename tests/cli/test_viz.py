"""`attnkit viz` end to end on tiny models: a translation run (Transformer), a Hugging Face BERT directory
and a Hugging Face GPT-2 directory; the RNN translation model through the library; errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from attnkit.cli.main import main
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.hf.gpt2 import save_gpt2
from attnkit.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from attnkit.models.transformer import Transformer, TransformerConfig
from attnkit.tasks.translation import Translator, finalize_weights, save_run_files
from attnkit.tokenizers.bytebpe import train_bytebpe
from attnkit.tokenizers.subword import SubwordTokenizer
from attnkit.tokenizers.wordpiece import WordPiece
from attnkit.viz.load import Viewable, attention_maps

DE = ["ein mann läuft", "eine frau singt", "zwei hunde spielen", "ein kind lacht"] * 5
EN = ["a man runs", "a woman sings", "two dogs play", "a child laughs"] * 5


def _translation_run(tmp_path: Path) -> Path:
    tok = SubwordTokenizer.train(DE + EN, vocab_size=80, min_frequency=1)
    cfg = TransformerConfig.tiny(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, n_heads=2)
    model = Transformer(cfg)
    run = tmp_path / "run"
    meta = {"family": "translation", "arch": "transformer", "src": "de", "tgt": "en", "joint": True,
            "model_config": cfg.to_dict(), "max_len": cfg.max_len}
    save_run_files(run, meta, tok, tok)
    (run / "run.json").write_text(json.dumps(meta))
    finalize_weights(run, model)
    return run


def test_translation_run(tmp_path: Path, capsys) -> None:
    run = _translation_run(tmp_path)
    out = tmp_path / "viz"
    assert main(["viz", str(run), "--text", "ein mann läuft", "--target", "a man runs", "--out", str(out),
                 "--layer", "1", "--head", "0", "--html"]) == 0
    printed = capsys.readouterr().out.split()
    names = {Path(p).name for p in printed}
    assert names == {"encoder.png", "decoder.png", "cross.png", "encoder-layer1-head0.png",
                     "decoder-layer1-head0.png", "cross-layer1-head0.png", "viewer.html"}
    assert all(Path(p).is_file() for p in printed)
    page = (out / "viewer.html").read_text()
    assert "encoder-decoder attention" in page and "decoder self-attention" in page
    # Without --target the model's own translation is shown.
    assert main(["viz", str(run), "--text", "ein kind", "--out", str(tmp_path / "v2")]) == 0


def test_hf_bert_and_gpt2_dirs(gpt_dir: Path, tmp_path: Path, capsys) -> None:
    wp = WordPiece.train(DE + EN, vocab_size=60, min_frequency=1)
    cfg = transformers.BertConfig(vocab_size=wp.vocab_size, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=20, max_position_embeddings=32)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    wp.save(tmp_path / "bert")
    assert main(["viz", str(tmp_path / "bert"), "--text", "a man runs", "--out", str(tmp_path / "vb")]) == 0
    assert {Path(p).name for p in capsys.readouterr().out.split()} == {"encoder.png"}

    assert main(["viz", str(gpt_dir), "--text", "a man runs", "--out", str(tmp_path / "vg"),
                 "--html"]) == 0
    assert {Path(p).name for p in capsys.readouterr().out.split()} == {"decoder.png", "viewer.html"}


def test_rnn_translation_model() -> None:
    tok = SubwordTokenizer.train(DE + EN, vocab_size=80, min_frequency=1)
    cfg = RNNSeq2SeqConfig.tiny(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, score="bilinear")
    model = RNNSeq2Seq(cfg).eval()
    view = Viewable("translation", model, tok, Translator(model, tok, tok, 64))
    maps = attention_maps(view, "ein mann läuft", "a man runs")
    cross = maps.get("cross")
    assert cross.weights.shape[:2] == (1, 1)
    assert cross.queries[0] == "<s>" and len(cross.keys) == len(tok.encode("ein mann läuft"))
    torch.testing.assert_close(cross.weights.sum(-1), torch.ones(1, 1, len(cross.queries)))


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpt")
    bpe = train_bytebpe(EN, vocab_size=270)
    save_gpt2(GPT(GPTConfig.tiny(vocab_size=bpe.vocab_size)), path, bpe)
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--layer", "7"], "--layer 7"), (["--head", "9"], "--head 9"), (["--target", "x"], "--target is for"),
     (["--max-tokens", "2"], "at most 2")],
)
def test_user_errors(gpt_dir: Path, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    assert main(["viz", str(gpt_dir), "--text", "a man runs", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_model(tmp_path: Path, capsys) -> None:
    assert main(["viz", str(tmp_path / "nope"), "--text", "x", "--out", str(tmp_path / "o")]) == 2
    assert "no such run or model directory" in capsys.readouterr().err
