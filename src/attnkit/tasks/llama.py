"""Hugging Face Llama, Qwen2 and Mistral directories in the run registry: the GPT family's model and
:class:`~attnkit.tasks.lm.ChatGenerator` (the Generator with the checkpoint's chat template).

    run = open_run("path/to/Qwen2-0.5B-Instruct")           # config.json model_type "qwen2"
    run.generate("The capital of France is", max_new_tokens=20, temperature=0)
    run.chat([{"role": "user", "content": "Hello!"}], max_new_tokens=50)

attnkit-trained Llama-style models (``attnkit lm train --preset llama-tiny``, or ``--init DIR`` to fine-tune
one of these directories) are ordinary GPT runs (family ``gpt``); :func:`attnkit.models.hf.llama.save_llama`
exports them as Hugging Face directories.
"""

from __future__ import annotations

from pathlib import Path

from attnkit.errors import CheckpointError
from attnkit.models.hf.common import read_config
from attnkit.models.hf.llama import load_llama
from attnkit.tasks.lm import FAMILY, ChatGenerator
from attnkit.tasks.runs import Run, register_hf_model_type


@register_hf_model_type("llama")
@register_hf_model_type("qwen2")
@register_hf_model_type("mistral")
def open_llama_dir(path: Path) -> Run:
    """A Hugging Face Llama / Qwen2 / Mistral directory with its tokenizer (tokenizer.json)."""
    model, tok = load_llama(path)
    if tok is None:
        raise CheckpointError(f"{path}: no tokenizer.json")
    return Run(FAMILY, Path(path), model, tok, ChatGenerator(model, tok), read_config(path), source="huggingface")
