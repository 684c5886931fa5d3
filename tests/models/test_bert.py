"""attnkit's BERT on its own: shapes, padding, tied MLM head, heads, config JSON, overfitting one batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.layers import TransformerLayer
from attnkit.models.bert import (
    BERT,
    PRESETS,
    BERTConfig,
    BERTForMaskedLM,
    BERTForSequenceClassification,
    BERTForTokenClassification,
    mean_pool,
)
from attnkit.tasks.embed import length_batches


def tiny(**kw) -> BERTConfig:
    return BERTConfig.tiny(vocab_size=40, dropout=0.0, attn_dropout=0.0, **kw)


def test_shapes_and_shared_blocks() -> None:
    m = BERT(tiny()).eval()
    ids = torch.randint(0, 40, (3, 7))
    out = m(ids)
    assert out.hidden.shape == (3, 7, 32) and out.pooled.shape == (3, 32)
    assert all(isinstance(layer, TransformerLayer) and not layer.norm_first for layer in m.layers)
    assert m.layers[0].ffn.activation == "gelu"
    with pytest.raises(ValueError, match=r"input_ids must be \[B, T\]"):
        m(ids[0])
    with pytest.raises(ValueError, match="attention_mask"):
        m(ids, torch.ones(3, 6))
    with pytest.raises(ValueError, match="maximum length"):
        m(torch.zeros(1, 65, dtype=torch.long))


def test_padding_does_not_change_real_positions() -> None:
    m = BERT(tiny()).eval()
    ids = torch.randint(5, 40, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        a, b = m(ids), m(padded, mask)
    torch.testing.assert_close(b.hidden[:, :6], a.hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(b.pooled, a.pooled, atol=1e-6, rtol=0)
    torch.testing.assert_close(mean_pool(b.hidden, mask), mean_pool(a.hidden, None), atol=1e-6, rtol=0)


def test_token_types_matter() -> None:
    m = BERT(tiny()).eval()
    ids = torch.randint(5, 40, (1, 6))
    with torch.no_grad():
        assert not torch.allclose(m(ids).hidden, m(ids, None, torch.ones_like(ids)).hidden)


def test_mlm_decoder_is_tied_to_embeddings_and_select_picks_rows() -> None:
    m = BERTForMaskedLM(tiny()).eval()
    names = [n for n, _ in m.named_parameters()]
    assert not any("decoder" in n for n in names) and "mlm.bias" in names
    ids = torch.randint(0, 40, (2, 5))
    full = m(ids).logits
    assert full.shape == (2, 5, 40)
    sel = torch.tensor([[True, False, False, True, False], [False, False, True, False, False]])
    torch.testing.assert_close(m(ids, select=sel).logits, full[sel])
    # The decoder is the embedding matrix: logits are h W_emb^T + b.
    h = m.mlm.norm(F.gelu(m.mlm.dense(m(ids).hidden)))
    torch.testing.assert_close(full, h @ m.bert.embeddings.tokens.weight.T + m.mlm.bias)


def test_classification_heads() -> None:
    ids = torch.randint(0, 40, (3, 7))
    seq = BERTForSequenceClassification(tiny(), num_labels=4).eval()
    tok = BERTForTokenClassification(tiny(), num_labels=5).eval()
    assert seq(ids).logits.shape == (3, 4) and tok(ids).logits.shape == (3, 7, 5)
    with pytest.raises(ValueError):
        BERTForSequenceClassification(tiny(), num_labels=0)


def test_config_json_and_presets(tmp_path) -> None:
    c = BERTConfig.small(vocab_size=123)
    c.save(tmp_path)
    assert BERTConfig.load(tmp_path) == c
    for name in PRESETS:
        BERTConfig.preset(name)
    base = BERTConfig.base()
    assert (base.n_layers, base.d_model, base.n_heads, base.d_ff) == (12, 768, 12, 3072)
    with pytest.raises(ValueError, match="multiple"):
        BERTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown BERT preset"):
        BERTConfig.preset("huge")


def test_masked_lm_overfits_one_batch() -> None:
    torch.manual_seed(0)
    m = BERTForMaskedLM(tiny())
    ids = torch.randint(5, 40, (4, 8))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    labels[:, 5] = ids[:, 5]
    corrupted = ids.clone()
    corrupted[:, [2, 5]] = 4
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(50):
        loss = F.cross_entropy(m(corrupted).logits.reshape(-1, 40), labels.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()


def test_length_batches_cover_every_index_once() -> None:
    lengths = [5, 3, 5, 9, 3, 3, 7, 5, 5, 1]
    batches = length_batches(lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert all(1 <= len(b) <= 3 for b in batches)
    uniform = [b for b in batches if len({lengths[i] for i in b}) == 1]
    assert len(uniform) >= 2  # the 5s and the 3s come as mask-free batches
