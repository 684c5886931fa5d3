"""The weight collectors: per layer and head, equal to Hugging Face's ``output_attentions`` for GPT-2
and BERT, and for the Transformer equal to a direct recomputation; the collectors' outputs equal the
models' own forward (so a collector cannot drift from its model)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers

from attnkit.attention.masks import masked_softmax
from attnkit.models.bert import BERT
from attnkit.models.hf.bert import load_bert
from attnkit.models.hf.gpt2 import load_gpt2
from attnkit.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from attnkit.models.transformer import Transformer, TransformerConfig
from attnkit.viz.weights import bert_weights, gpt_weights, rnn_weights, to_maps, transformer_weights


def _perturb(model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)


def test_gpt_weights_equal_hugging_face(tmp_path: Path) -> None:
    cfg = transformers.GPT2Config(vocab_size=61, n_positions=32, n_embd=32, n_layer=3, n_head=4, bos_token_id=0,
                                  eos_token_id=0, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = load_gpt2(tmp_path)[0].eval()
    idx = torch.randint(0, 61, (2, 13))
    got = gpt_weights(ours, idx)
    with torch.no_grad():
        ref = hf(idx, output_attentions=True)
    assert got.weights["decoder"].shape == (3, 2, 4, 13, 13)
    torch.testing.assert_close(got.weights["decoder"], torch.stack(ref.attentions), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.output, ours(idx))


def test_bert_weights_equal_hugging_face(tmp_path: Path) -> None:
    cfg = transformers.BertConfig(vocab_size=71, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=40, type_vocab_size=2,
                                  attn_implementation="eager")
    hf = transformers.BertModel(cfg).eval()
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = load_bert(tmp_path, BERT)[0].eval()
    ids = torch.randint(1, 71, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    got = bert_weights(ours, ids, mask)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_attentions=True)
    w = got.weights["encoder"]  # (L, B, H, T, T)
    assert w.shape == (2, 2, 4, 9, 9)
    assert float(w[:, 1, :, :, 6:].abs().max()) == 0.0  # padding is never attended to
    torch.testing.assert_close(w, torch.stack(ref.attentions), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.output, ours.encode(ids, mask).hidden)


def test_transformer_weights_are_each_layers_attention() -> None:
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.tiny(src_vocab_size=40, tgt_vocab_size=40, n_heads=2)).eval()
    src = torch.randint(3, 40, (2, 7))
    src[1, 5:] = 0
    tgt = torch.randint(3, 40, (2, 5))
    got = transformer_weights(model, src, tgt)
    torch.testing.assert_close(got.output, model(src, tgt))
    enc, dec, cross = got.weights["encoder"], got.weights["decoder"], got.weights["cross"]
    assert enc.shape == (2, 2, 2, 7, 7) and dec.shape == (2, 2, 2, 5, 5) and cross.shape == (2, 2, 2, 5, 7)
    # Layer 0 of the encoder, recomputed from its projections on the embeddings (post-norm: the
    # sub-layer reads the embeddings themselves).
    attn = model.encoder[0].self_attn
    x = model.src_embed(src)
    q = attn.q_proj(x).view(2, 7, 2, 32).transpose(1, 2)
    k = attn.k_proj(x).view(2, 7, 2, 32).transpose(1, 2)
    ref = masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(32), (src != 0)[:, None, None, :])
    torch.testing.assert_close(enc[0], ref.detach(), atol=1e-6, rtol=0)
    assert float(torch.triu(dec, diagonal=1).abs().max()) == 0.0  # causal
    assert float(cross[:, 1, :, :, 5:].abs().max()) == 0.0  # source padding
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 2, 2, 5))


def test_rnn_weights_and_labels() -> None:
    torch.manual_seed(0)
    model = RNNSeq2Seq(RNNSeq2SeqConfig.tiny(src_vocab_size=20, tgt_vocab_size=20)).eval()
    src, tgt = torch.randint(3, 20, (1, 6)), torch.randint(3, 20, (1, 4))
    got = rnn_weights(model, src, tgt)
    assert got.weights["cross"].shape == (1, 1, 1, 4, 6)
    torch.testing.assert_close(got.output, model(src, tgt))
    maps = to_maps(got, "RNN", {"cross": (list("abcd"), list("uvwxyz"))})
    assert maps.get("cross").weights.shape == (1, 1, 4, 6)
    with pytest.raises(KeyError, match="no 'encoder'"):
        maps.get("encoder")
    with pytest.raises(ValueError, match=r"\[L, H, 4, 5\]"):
        to_maps(got, "RNN", {"cross": (list("abcd"), list("uvwxy"))})
