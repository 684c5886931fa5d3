"""attnkit.tasks.limits (issue 15): the memory the process may use, the estimates from model configs, and
the one-line errors that name the option, its value, the estimate and the limit."""

from __future__ import annotations

import resource

import pytest
import torch

from attnkit.errors import InputError
from attnkit.models.bert import BERT, BERTConfig
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.params import num_parameters
from attnkit.models.transformer import Transformer, TransformerConfig
from attnkit.tasks import limits
from attnkit.tokenizers.subword import SubwordTokenizer

GB = 10**9


def test_an_address_space_limit_set_by_a_parent_is_honoured() -> None:
    """RLIMIT_AS (ulimit -v, or setrlimit in a parent): what is left under it, not the machine's free memory,
    is the bound. (The soft limit is lowered for a moment and put back.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = limits._status_bytes("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + GB, hard))
    try:
        memory = limits.available_memory()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert memory is not None and 0.9 * GB < memory.bytes <= GB and "ulimit -v" in memory.source


def test_the_message_names_option_value_estimate_and_limit() -> None:
    have = limits.Memory(int(20.3 * GB), "this machine has {} available")
    with limits.option_names({"beam_size": "--beam", "max_tokens": "--batch-tokens"}):
        with pytest.raises(InputError) as err:
            limits.check_memory(24.1 * GB, "its decoder caches", [limits.Option("beam_size", 100000),
                                                                 limits.Option("max_tokens", 3000, 3000)],
                                available=have)
    assert str(err.value) == ("--beam 100000 would need about 24.1 GB for its decoder caches; this machine has "
                              "20.3 GB available (lower --beam or --batch-tokens)")
    with pytest.raises(InputError, match=r"^beam_size 100000 would"):  # the Python names outside the CLI
        limits.check_memory(24.1 * GB, "x", [limits.Option("beam_size", 100000)], available=have)
    limits.check_memory(limits.USABLE_SHARE * have.bytes, "x", [limits.Option("beam_size", 1)], available=have)


@pytest.mark.parametrize(("config", "build", "within"), [
    (GPTConfig.tiny(), GPT, 0.05), (GPTConfig(), GPT, 0.01), (TransformerConfig(), Transformer, 0.01),
    (TransformerConfig(d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2, src_vocab_size=80,
                       tgt_vocab_size=80, max_len=32), Transformer, 0.15),
    (BERTConfig(), BERT, 0.01),
])
def test_parameter_counts_from_the_config_alone(config, build, within: float) -> None:  # noqa: ANN001
    """The training check runs before the model exists: its count from the sizes is close to the real one."""
    shape = limits.shape_of(config)
    with torch.device("meta"):  # no memory, no time
        real = num_parameters(build(config))
    assert abs(shape.parameters - real) <= within * real, (shape.parameters, real)


def test_shapes_of_every_family() -> None:
    gpt = limits.shape_of(GPTConfig.tiny())
    assert (gpt.encoder_layers, gpt.decoder_layers, gpt.cross, gpt.kv_width) == (0, 2, False, 32)
    seq2seq = limits.shape_of(TransformerConfig(n_encoder_layers=3, n_decoder_layers=2))
    assert (seq2seq.encoder_layers, seq2seq.decoder_layers, seq2seq.cross) == (3, 2, True)
    bert = limits.shape_of(BERTConfig())
    assert (bert.encoder_layers, bert.decoder_layers, bert.vocab) == (12, 0, 30522)


def test_decoding_memory_grows_with_rows_cache_and_beam() -> None:
    shape = limits.shape_of(TransformerConfig())
    one = limits.decoding_bytes(shape, 5, 64, 30, beams=5)
    assert limits.decoding_bytes(shape, 50, 64, 30, beams=5) > 9 * one
    assert limits.decoding_bytes(shape, 5, 128, 30, beams=5) > one
    # beam search's [sentences, K, K] masks: quadratic in the beam
    assert limits.decoding_bytes(shape, 10**5, 64, 30, beams=10**5) > 4 * 10**10


def test_options_in_range_and_clamps(capsys) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=r"^--x must be >= 1, got 0$"), limits.option_names({"x": "--x"}):
        limits.at_least("x", 0, 1)
    with pytest.raises(InputError, match="got nan"):
        limits.at_least("x", float("nan"), 0)
    with pytest.raises(InputError, match="finite"):
        limits.finite("t", float("inf"))
    with pytest.raises(InputError, match="64 bits"):
        limits.fits_64_bits("seed", 2**64)
    assert limits.threads("--threads", 10**6) >= 1 and "more than the" in capsys.readouterr().err
    assert limits.threads("--threads", None) is None and limits.threads("--threads", 0) is None


def test_a_vocabulary_larger_than_the_text_can_give_trains_the_same_tokenizer() -> None:
    texts = ["the dog runs under the tree", "a cat sleeps on the big red house"] * 5
    size = limits.vocab_for_training("vocab_size", 10**15, texts)
    assert size < 10**4
    assert SubwordTokenizer.train(texts, size).tokenizer.get_vocab() == \
        SubwordTokenizer.train(texts, 10**5).tokenizer.get_vocab()
    with pytest.raises(InputError, match="tokenizer trainer"):
        limits.vocab_for_training("vocab_size", 10**15, ["x" * 10**6] * 10**4)  # 10**10 characters
