"""``open_run``: every family's run directory (made at test time by today's commands, tests/cli/_runs.py) and
tiny Hugging Face GPT-2 / BERT directories open as the right family, and the Run's methods give what the
model loaded by hand gives (or what ``transformers`` gives); unknown and corrupt directories are one-line
errors; a new family is one registration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from _runs import train_tiny_runs  # noqa: E402  (tests/cli/_runs.py)

import attnkit  # noqa: E402
from attnkit.decoding.generate import GenerationConfig, generate_text  # noqa: E402
from attnkit.errors import CheckpointError, InputError  # noqa: E402
from attnkit.models import (  # noqa: E402
    GPT,
    BERTConfig,
    BERTForMaskedLM,
    BERTForSequenceClassification,
    GPTConfig,
    Transformer,
    TransformerConfig,
)
from attnkit.tasks import runs  # noqa: E402
from attnkit.tasks.embed import embed_sentences  # noqa: E402
from attnkit.tasks.runs import Run, open_run, register_run_family  # noqa: E402
from attnkit.tasks.translation import Translator  # noqa: E402
from attnkit.tokenizers.bytebpe import save_gpt2_tokenizer, train_bytebpe  # noqa: E402
from attnkit.tokenizers.char import TextTokenizer  # noqa: E402
from attnkit.tokenizers.subword import SubwordTokenizer, tokenizer_files  # noqa: E402
from attnkit.tokenizers.wordpiece import WordPiece  # noqa: E402
from attnkit.training.checkpoint import load_model_weights, load_weights_into, read_meta, read_weights  # noqa: E402

transformers.logging.set_verbosity_error()
TEXTS = ["the dog runs on the tree", "a small red house", "", "green child under big park"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_tiny_runs(tmp_path_factory.mktemp("runs"))


def test_translation_run(tiny) -> None:
    path = tiny["translate"]
    run = open_run(path)
    assert (run.family, run.source, run.path) == ("translation", "attnkit", path)
    meta = json.loads((path / "run.json").read_text())
    model = Transformer(TransformerConfig.from_dict(meta["model_config"]))
    load_weights_into(model, read_weights(path / "model.safetensors"), path)
    src_file, tgt_file = tokenizer_files(meta["src"], meta["tgt"], meta["joint"])
    by_hand = Translator(model.eval(), SubwordTokenizer.load(path / src_file), SubwordTokenizer.load(path / tgt_file),
                         meta["model_config"]["max_len"])
    sentences = ["3 May 2001", "the fifth of June, nineteen eighty"]
    assert run.translate(sentences) == by_hand.translate(sentences)
    assert run.translate(sentences, beam_size=2) == by_hand.translate(sentences, beam_size=2)
    assert run.can("translate") and not run.can("generate")
    with pytest.raises(InputError, match="'translation' model cannot generate"):
        run.generate("x")


@pytest.mark.parametrize("name", ["lm", "lm_bpe"])
def test_gpt_run(tiny, name: str) -> None:
    path = tiny[name]
    run = open_run(path)
    assert (run.family, run.source) == ("gpt", "attnkit")
    model = GPT(GPTConfig.from_dict(read_meta(path, family="gpt")["model_config"]))
    load_model_weights(model, path, family="gpt")
    tok = TextTokenizer.load(path)
    stop = (tok.eos_id,) if tok.eos_id is not None else ()
    expected = generate_text(model.eval(), tok, ["the dog"], GenerationConfig(max_new_tokens=12, stop_tokens=stop),
                             context=model.config.max_len)
    assert run.generate("the dog", max_new_tokens=12, temperature=0.0) == "the dog" + expected[0]
    with pytest.raises(InputError, match="cannot embed"):
        run.embed(["x"])


def test_bert_runs(tiny) -> None:
    mlm = open_run(tiny["mlm"])
    assert mlm.family == "bert-mlm" and mlm.can("embed") and not mlm.can("classify")
    model = BERTForMaskedLM(BERTConfig.from_dict(read_meta(tiny["mlm"])["model_config"]))
    load_model_weights(model, tiny["mlm"], family="bert-mlm")
    tok = WordPiece.from_dir(tiny["mlm"] / "tokenizer")
    assert torch.equal(mlm.embed(TEXTS).vectors, embed_sentences(model, tok, TEXTS).vectors)

    clf = open_run(tiny["classify"])
    assert clf.family == "bert-classify" and clf.can("classify") and clf.can("embed")
    meta = read_meta(tiny["classify"])
    model = BERTForSequenceClassification(BERTConfig.from_dict(meta["model_config"]), len(meta["labels"]))
    load_model_weights(model, tiny["classify"], family="bert-classify")
    x, attn = tok.pad(tok.encode(TEXTS, max_length=32).ids)
    with torch.no_grad():
        probs = model.eval()(x, attn).logits.softmax(-1)
    expected = [(meta["labels"][int(p.argmax())], float(p.max())) for p in probs]
    got = clf.classify(TEXTS)
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-6)
    with pytest.raises(InputError, match="'bert-mlm' model cannot classify"):
        mlm.classify(TEXTS)


def test_family_given_keeps_that_familys_errors(tiny) -> None:
    with pytest.raises(CheckpointError, match="checkpoint of a 'translation' model, but a 'gpt' model was expected"):
        open_run(tiny["translate"], family="gpt")
    with pytest.raises(CheckpointError, match="run of a 'gpt' model, not a translation model"):
        open_run(tiny["lm"], family="translation")
    with pytest.raises(CheckpointError, match="'bert-mlm' model, but a 'bert-classify' model was expected"):
        open_run(tiny["mlm"], family="bert-classify")
    with pytest.raises(ValueError, match="unknown run family 'toy'"):
        open_run(tiny["lm"], family="toy")


def test_hugging_face_gpt2_directory(tmp_path: Path) -> None:
    tok = train_bytebpe(TEXTS * 10, vocab_size=300)
    cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=tok.eos_id, eos_token_id=tok.eos_id, initializer_range=0.3)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    save_gpt2_tokenizer(tok, tmp_path)
    run = open_run(tmp_path)
    assert (run.family, run.source, run.meta["model_type"]) == ("gpt", "huggingface", "gpt2")
    prompt = tok.encode("the dog")
    new = hf.generate(torch.tensor([prompt]), max_new_tokens=15, do_sample=False, eos_token_id=tok.eos_id,
                      pad_token_id=tok.eos_id)[0, len(prompt) :]
    assert run.generate("the dog", max_new_tokens=15, temperature=0.0) == "the dog" + tok.decode(new.tolist())
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json or vocab.json"):
        open_run(tmp_path)


def test_hugging_face_bert_directory(tmp_path: Path) -> None:
    wp = WordPiece.train(TEXTS * 10, vocab_size=60, min_frequency=1)
    cfg = transformers.BertConfig(vocab_size=wp.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=40, initializer_range=0.3)
    torch.manual_seed(0)
    hf = transformers.BertModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    wp.save(tmp_path)
    run = open_run(tmp_path)
    assert (run.family, run.source) == ("bert", "huggingface") and run.can("embed")
    ids, mask = wp.pad(wp.encode(TEXTS).ids)
    with torch.no_grad():
        hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, E)
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    expected = torch.nn.functional.normalize(pooled, dim=-1)
    torch.testing.assert_close(run.embed(TEXTS).vectors, expected, atol=1e-5, rtol=0)


def test_unknown_and_corrupt_directories(tiny, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope: no such run or model directory"):
        open_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"neither an attnkit run \(run.json\) nor a Hugging Face directory"):
        open_run(tmp_path / "empty")
    toy = tmp_path / "toy"
    toy.mkdir()
    (toy / "run.json").write_text(json.dumps({"family": "toy"}))
    with pytest.raises(CheckpointError, match="a 'toy' run, which attnkit cannot open"):
        open_run(toy)
    (toy / "run.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="run.json: unreadable metadata"):
        open_run(toy)
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(CheckpointError, match="model_type 't5' is not supported"):
        open_run(t5)
    broken = tmp_path / "broken"
    shutil.copytree(tiny["translate"], broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read weights"):
        open_run(broken)


def test_a_new_family_is_one_registration(tiny, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs.run_families()  # the built-in families are registered
    monkeypatch.setattr(runs, "_RUN_FAMILIES", dict(runs._RUN_FAMILIES))

    class Echo:
        def translate(self, sentences: list[str]) -> list[str]:
            return list(sentences)

    @register_run_family("echo")
    def open_echo(path: Path) -> Run:
        return Run("echo", path, torch.nn.Identity(), None, Echo())

    d = tmp_path / "echo"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"family": "echo"}))
    assert "echo" in runs.run_families() and open_run(d).translate(["a", "b"]) == ["a", "b"]
    assert set(runs.run_families()) >= {"translation", "gpt", "bert-mlm", "bert-classify"}
    assert set(runs.hf_model_types()) >= {"gpt2", "bert"}


def test_attnkit_exports_open_run_lazily() -> None:
    assert attnkit.open_run is open_run
    code = "import sys, attnkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
