"""attnkit's models: modules and their decoding sessions, importing nothing above ``layers/`` (Hugging Face
conversion is :mod:`attnkit.models.hf`, which imports these; training tasks and run loading live in the
``tasks`` package, above).

    from attnkit.models import GPT, GPTConfig
    model = GPT(GPTConfig.tiny(vocab_size=100))
"""

from attnkit.models.baselines import (
    CNNClassifier,
    MLPClassifier,
    RNNClassifier,
    SaliencyClassifier,
    SelfAttentionClassifier,
    build_baseline,
)
from attnkit.models.bert import (
    BERT,
    BERTConfig,
    BERTForMaskedLM,
    BERTForSequenceClassification,
    BERTForTokenClassification,
)
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.params import num_parameters
from attnkit.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from attnkit.models.transformer import Transformer, TransformerConfig

__all__ = [
    "BERT", "BERTConfig", "BERTForMaskedLM", "BERTForSequenceClassification", "BERTForTokenClassification",
    "CNNClassifier", "GPT", "GPTConfig", "MLPClassifier", "RNNClassifier", "RNNSeq2Seq", "RNNSeq2SeqConfig",
    "SaliencyClassifier", "SelfAttentionClassifier", "Transformer", "TransformerConfig", "build_baseline",
    "num_parameters",
]
