"""One module per model family: its training task, inference wrapper and run format.

* :mod:`~attnkit.tasks.translation`: encoder-decoder translation (Transformer, RNN): TranslationTask,
  Translator, the run directory.
* :mod:`~attnkit.tasks.lm`: GPT language models: LMTask, Generator, GPT runs and GPT-2 directories.
* :mod:`~attnkit.tasks.bert`: BERT masked-LM and classification: MLMTask, ClassifyTask, Classifier, BERT runs
  and BERT directories; :mod:`~attnkit.tasks.embed`: sentence embeddings (Embedder).
* :mod:`~attnkit.tasks.demo`: the two built-in demos (dates -> ISO, the scoring-function alignment task).
* :mod:`~attnkit.tasks.runs`: ``open_run(path) -> Run`` for every run and supported Hugging Face
  directory; a new family registers itself there.
"""

from attnkit.tasks.runs import Run, open_run, register_hf_model_type, register_run_family

__all__ = ["Run", "open_run", "register_hf_model_type", "register_run_family"]
