"""The models' public names: ``from attnkit.models import ...`` without knowing the file layout."""

from __future__ import annotations

import torch

import attnkit.models
from attnkit.models import BERT, GPT, BERTConfig, GPTConfig, Transformer, TransformerConfig, num_parameters


def test_every_model_class_and_config_is_exported() -> None:
    names = ["Transformer", "TransformerConfig", "GPT", "GPTConfig", "BERT", "BERTConfig", "BERTForMaskedLM",
             "BERTForSequenceClassification", "BERTForTokenClassification", "RNNSeq2Seq", "RNNSeq2SeqConfig",
             "num_parameters"]
    assert all(hasattr(attnkit.models, n) for n in names)
    assert set(names) <= set(attnkit.models.__all__)


def test_num_parameters_counts_tied_weights_once() -> None:
    gpt = GPT(GPTConfig.tiny(vocab_size=50))
    assert gpt.config.tie_embeddings and gpt.lm_head.weight is gpt.embed.tokens.weight
    unique = {id(p): p.numel() for p in gpt.parameters()}
    assert num_parameters(gpt) == gpt.num_parameters() == sum(unique.values())
    assert num_parameters(torch.nn.Linear(3, 4)) == 16
    for model in (Transformer(TransformerConfig.tiny(src_vocab_size=30, tgt_vocab_size=30)),
                  BERT(BERTConfig.tiny(vocab_size=30))):
        assert num_parameters(model) == sum(p.numel() for p in model.parameters())
