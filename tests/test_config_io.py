"""The shared JSON config I/O (attnkit.config_io) against files written by the per-family code it
replaced: the texts below are what ``save`` wrote before (captured from commit dcb4314; TrainConfig from
9a52d06), so run
directories from before the change still load, and new ones are written byte for byte the same."""

import dataclasses

import pytest

from attnkit.errors import CheckpointError
from attnkit.models.bert import CONFIG_FILE as BERT_FILE
from attnkit.models.bert import BERTConfig
from attnkit.models.gpt import GPTConfig
from attnkit.models.rnn import RNNSeq2SeqConfig
from attnkit.models.transformer import TransformerConfig
from attnkit.training.config import TrainConfig

OLD_TRANSFORMER = (
    '{\n  "src_vocab_size": 100,\n  "tgt_vocab_size": 100,\n  "d_model": 64,\n  "num_heads": 4,\n  "d_ff": 128,\n'
    '  "num_encoder_layers": 2,\n  "num_decoder_layers": 2,\n  "dropout": 0.0,\n  "attn_dropout": null,\n'
    '  "activation": "relu",\n  "norm_first": true,\n  "final_norm": true,\n  "positions": "sinusoidal",\n'
    '  "max_len": 256,\n  "share_embeddings": true,\n  "tie_output": true,\n  "pad_id": 0,\n  "bos_id": 1,\n'
    '  "eos_id": 2,\n  "eps": 1e-05,\n  "model_type": "transformer"\n}\n'
)
OLD_GPT = (
    '{\n  "vocab_size": 77,\n  "block_size": 64,\n  "n_layer": 4,\n  "n_head": 4,\n  "n_embd": 128,\n'
    '  "d_ff": null,\n  "dropout": 0.0,\n  "bias": false,\n  "tie_embeddings": true,\n  "layer_norm_eps": 1e-05\n}\n'
)
OLD_BERT = (
    '{\n  "vocab_size": 123,\n  "n_layers": 2,\n  "n_heads": 2,\n  "d_model": 32,\n  "d_ff": 64,\n'
    '  "max_positions": 64,\n  "type_vocab_size": 2,\n  "dropout": 0.1,\n  "attn_dropout": 0.1,\n  "eps": 1e-12,\n'
    '  "pad_id": 0\n}\n'
)
OLD_RNN = (
    '{\n  "src_vocab_size": 8000,\n  "tgt_vocab_size": 8000,\n  "d_emb": 32,\n  "d_hidden": 32,\n'
    '  "num_layers": 1,\n  "cell": "lstm",\n  "score": "hard",\n  "hard_score": "bilinear",\n'
    '  "bidirectional": true,\n  "dropout": 0.0,\n  "pad_id": 0,\n  "bos_id": 1,\n  "eos_id": 2,\n'
    '  "reinforce_weight": 1.0,\n  "model_type": "rnn"\n}\n'
)
OLD_TRAIN = (
    '{\n  "max_steps": 7,\n  "lr": 0.0003,\n  "warmup": 0,\n  "schedule": "constant",\n  "min_lr": 0.0,\n  "wei'
    'ght_decay": 0.0,\n  "betas": [\n    0.9,\n    0.95\n  ],\n  "eps": 1e-09,\n  "clip_norm": null,\n  "grad_ac'
    'cum": 1,\n  "precision": "fp32",\n  "device": "auto",\n  "compile": false,\n  "eval_every": 0,\n  "ckpt_e'
    'very": 500,\n  "keep_last": 3,\n  "log_every": 10,\n  "seed": 0,\n  "time_limit_s": null,\n  "quiet": fal'
    'se,\n  "extra": {\n    "src": "de",\n    "n": 2\n  }\n}\n'
)
CASES = [
    (TransformerConfig.tiny(src_vocab_size=100, tgt_vocab_size=100, norm_first=True), OLD_TRANSFORMER, "t.json"),
    # written before GPTConfig.activation existed (GELU-tanh then; the preset now uses exact GELU)
    (GPTConfig.preset("shakespeare-char", vocab_size=77, activation="gelu_tanh"), OLD_GPT, "g.json"),
    (BERTConfig.tiny(vocab_size=123), OLD_BERT, BERT_FILE),
    (RNNSeq2SeqConfig.tiny(score="hard", cell="lstm"), OLD_RNN, "r.json"),
    (TrainConfig(max_steps=7, lr=3e-4, betas=(0.9, 0.95), clip_norm=None, extra={"src": "de", "n": 2}), OLD_TRAIN,
     "train_config.json"),
]


def _where(cfg, tmp_path, name):
    """(the argument save/load take, the file written): BERT takes the run directory."""
    return (tmp_path, tmp_path / name) if isinstance(cfg, BERTConfig) else (tmp_path / name, tmp_path / name)


@pytest.mark.parametrize("cfg, old_text, name", CASES, ids=lambda x: type(x).__name__ if dataclasses.is_dataclass(x)
                         else "")
def test_old_json_loads_and_new_json_is_identical(cfg, old_text, name, tmp_path) -> None:
    arg, file = _where(cfg, tmp_path, name)
    file.write_text(old_text)
    assert type(cfg).load(arg) == cfg
    file.unlink()
    cfg.save(arg)
    assert file.read_text() == old_text
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("cls", [TransformerConfig, GPTConfig, BERTConfig, RNNSeq2SeqConfig])
def test_presets_and_errors(cls, tmp_path) -> None:
    for name in cls.presets:
        assert isinstance(cls.preset(name), cls)
    with pytest.raises(ValueError, match=rf"unknown {cls.family} preset 'nope'; choose one of \["):
        cls.preset("nope")
    for text, why in (("{not json", "Expecting property name"), ("[1, 2]", "must be a JSON object")):
        (tmp_path / "c.json").write_text(text)
        (tmp_path / BERT_FILE).write_text(text)
        arg = tmp_path if cls is BERTConfig else tmp_path / "c.json"
        with pytest.raises(CheckpointError, match=rf"not a readable {cls.family} configuration \(.*{why}"):
            cls.load(arg)
    with pytest.raises(CheckpointError, match="not a readable"):
        cls.load(tmp_path / "missing")


def test_unknown_fields_strict_for_gpt_and_bert_dropped_for_seq2seq() -> None:
    for cls in (GPTConfig, BERTConfig):
        with pytest.raises(CheckpointError, match=rf"unknown {cls.family} config fields \['extra'\]"):
            cls.from_dict({**cls.preset("tiny").to_dict(), "extra": 1})
    for cls in (TransformerConfig, RNNSeq2SeqConfig):
        assert cls.from_dict({**cls.tiny().to_dict(), "extra": 1}) == cls.tiny()


@pytest.mark.parametrize("cls", [TransformerConfig, GPTConfig, BERTConfig])
def test_one_naming_of_the_shared_sizes_and_both_names_read(cls) -> None:
    """Issue 14: d_model, n_heads, d_ff, max_len, eps in every Transformer-family config; JSON keeps the
    names the files were first written with, and a dict under either name loads to the same config."""
    cfg = cls.preset("tiny")
    for name in ("d_model", "n_heads", "d_ff", "max_len", "eps"):
        assert hasattr(cfg, name), name
    layers = ("n_layers",) if cls is not TransformerConfig else ("n_encoder_layers", "n_decoder_layers")
    assert all(hasattr(cfg, name) for name in layers)
    written = cfg.to_dict()
    assert set(cls.legacy.values()) <= set(written) and not set(cls.legacy) & set(written)
    current = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}
    assert cls.from_dict(written) == cls.from_dict(current) == cfg
