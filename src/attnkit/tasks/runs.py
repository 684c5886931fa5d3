"""One door to every trained model: ``open_run(path) -> Run`` for attnkit run directories and the
supported Hugging Face directories.

An attnkit run directory names its family in ``run.json`` (``translation``, ``gpt``, ``bert-mlm``,
``bert-classify``); a Hugging Face directory names its architecture in ``config.json``'s ``model_type``
(``gpt2``, ``llama``, ``qwen2``, ``mistral``, ``bert``). Each family's task module registers its loader
here with one decorator::

    @register_run_family("gpt")              # run.json "family"
    def open_gpt_run(path: Path) -> Run: ...

    @register_hf_model_type("gpt2")          # config.json "model_type"
    def open_gpt2_dir(path: Path) -> Run: ...

so a new family (a Marian translation model, a Llama-style decoder) is one new module under ``tasks/``
named in :data:`FAMILY_MODULES`; nothing else changes. A loader checks its own directory and raises a
one-line :class:`~attnkit.errors.CheckpointError` naming the file at fault.

    run = open_run("runs/de-en")
    run.translate(["Ein Hund läuft."])                  # translation runs
    run.generate("ROMEO:", max_new_tokens=50)            # GPT runs, GPT-2 / Llama / Qwen2 / Mistral directories
    run.chat([{"role": "user", "content": "Hi"}])        # Llama / Qwen2 / Mistral directories (chat template)
    run.embed(["A dog runs."]).vectors                   # BERT runs and BERT directories
    run.classify(["a fine film"])                        # BERT classifier runs

Precision (issue 16): ``open_run(path, dtype="int8")`` (or "bf16", or "auto": the fastest mode the device
has within the accuracy bounds of docs/speed.md) quantizes the model right after its weights are loaded,
or loads the ``model.<dtype>.safetensors`` that ``attnkit quantize`` saved in the directory
(:mod:`attnkit.tasks.precision`); ``run.precision`` says which mode it runs in and why. The default "fp32"
leaves the model exactly as loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from attnkit.errors import CheckpointError, InputError
from attnkit.layers.quant import DtypeChoice
from attnkit.tasks.precision import DEFAULT as FP32
from attnkit.tasks.precision import set_precision
from attnkit.training.checkpoint import RUN_FILE, read_meta_file

HF_CONFIG_FILE = "config.json"
# The task modules that register families; importing them fills the two registries below.
FAMILY_MODULES = ("attnkit.tasks.translation", "attnkit.tasks.pretrained_translation", "attnkit.tasks.lm",
                  "attnkit.tasks.llama", "attnkit.tasks.bert")
# What a Run's inference object may offer (a method of that name).
CAPABILITIES = ("translate", "generate", "chat", "embed", "classify")

Loader = Callable[[Path], "Run"]
_RUN_FAMILIES: dict[str, Loader] = {}
_HF_MODEL_TYPES: dict[str, Loader] = {}


@dataclass
class Run:
    """A model ready to use: its family, the model (eval mode), tokenizer(s), the inference object that
    wraps them (a Translator, Generator, Embedder or Classifier) and the directory's metadata (run.json /
    checkpoint meta.json of an attnkit run, config.json of a Hugging Face directory).

    family: the attnkit family that runs it ("translation", "gpt", "bert-mlm", "bert-classify"; a Hugging
    Face GPT-2 directory is "gpt", a BERT directory "bert"); source: "attnkit" or "huggingface"."""

    family: str
    path: Path
    model: nn.Module
    tokenizer: Any
    inference: Any
    meta: dict = field(default_factory=dict)
    source: str = "attnkit"
    target_tokenizer: Any = None  # translation: the target side's tokenizer (the same object when joint)
    precision: DtypeChoice = FP32  # the inference mode (fp32, bf16, int8) and why it was chosen
    quantized_from: Path | None = None  # the saved quantized weights it loaded (attnkit quantize), if any

    def can(self, capability: str) -> bool:
        """Whether this run can ``capability`` (one of translate, generate, embed, classify)."""
        return callable(getattr(self.inference, capability, None))

    def _need(self, capability: str) -> Any:
        if not self.can(capability):
            able = [c for c in CAPABILITIES if self.can(c)] or ["nothing"]
            raise InputError(f"{self.path}: a {self.family!r} model cannot {capability} (it can: "
                             f"{', '.join(able)})")
        return self.inference

    def translate(self, sentences: Sequence[str], **options: Any) -> list[str]:
        """Translations of ``sentences`` (options: beam_size, length_penalty; see Translator.translate)."""
        return self._need("translate").translate(sentences, **options)

    def generate(self, prompt: str = "", **options: Any) -> str:
        """``prompt`` and its continuation (options: max_new_tokens, temperature, top_k, top_p, seed; see
        Generator.generate)."""
        return prompt + self._need("generate").generate(prompt, **options)[0]

    def chat(self, messages: Sequence[dict], **options: Any) -> str:
        """The reply to a conversation ([{"role": "user", "content": ...}, ...]) under the checkpoint's
        chat template (Llama / Qwen2 / Mistral directories; options as ``generate``)."""
        return self._need("chat").chat(messages, **options)[0]

    def embed(self, texts: Sequence[str], **options: Any) -> Any:
        """Sentence embeddings (an ``Embedded``: ``.vectors`` [N, E], unit length; see Embedder.embed)."""
        return self._need("embed").embed(texts, **options)

    def classify(self, texts: Sequence[str], **options: Any) -> list[tuple[str, float]]:
        """(label, probability) of each text (see Classifier.classify)."""
        return self._need("classify").classify(texts, **options)


def register_run_family(name: str) -> Callable[[Loader], Loader]:
    """Decorator: ``loader(path) -> Run`` opens attnkit runs whose run.json says ``"family": name``."""

    def add(loader: Loader) -> Loader:
        _RUN_FAMILIES[name] = loader
        return loader

    return add


def register_hf_model_type(name: str) -> Callable[[Loader], Loader]:
    """Decorator: ``loader(path) -> Run`` opens Hugging Face directories of ``model_type`` ``name``."""

    def add(loader: Loader) -> Loader:
        _HF_MODEL_TYPES[name] = loader
        return loader

    return add


def _registries() -> tuple[dict[str, Loader], dict[str, Loader]]:
    for module in FAMILY_MODULES:
        importlib.import_module(module)
    return _RUN_FAMILIES, _HF_MODEL_TYPES


def run_families() -> list[str]:
    """The registered run families (run.json "family")."""
    return sorted(_registries()[0])


def hf_model_types() -> list[str]:
    """The registered Hugging Face model types (config.json "model_type")."""
    return sorted(_registries()[1])


def open_run(path: str | Path, family: str | None = None, *, model_type: str | None = None, dtype: str = "fp32",
             device: str = "cpu") -> Run:
    """The :class:`Run` of an attnkit run directory (run.json) or a Hugging Face directory (config.json).

    ``family`` / ``model_type``: open the directory as that run family / Hugging Face model type, whatever
    it says about itself, so that the family's own checks name what is wrong (a command that needs a GPT
    run reports "checkpoint of a 'bert-mlm' model, but a 'gpt' model was expected"). CheckpointError for
    a missing, unknown or corrupt directory.

    ``dtype``: "fp32" (default), "bf16", "int8" or "auto"; ``device``: where the model runs ("cpu",
    "cuda"). The model is moved, then quantized (or its saved quantized weights loaded); InputError for a
    mode the device cannot run (int8 off the CPU). See :mod:`attnkit.tasks.precision`."""
    return set_precision(_open(Path(path), family, model_type), dtype, device)


def _open(path: Path, family: str | None, model_type: str | None) -> Run:
    runs, hf = _registries()
    if family is not None:
        return _lookup(runs, family, "run family")(path)
    if model_type is not None:
        return _lookup(hf, model_type, "Hugging Face model type")(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run or model directory")
    # (the file that marks the directory, its field naming the loader, the registry, the error for other names)
    for file, key, registry, unknown in (
        (RUN_FILE, "family", runs, "a {name!r} run, which attnkit cannot open (run families: {known})"),
        (HF_CONFIG_FILE, "model_type", hf, "model_type {name!r} is not supported (Hugging Face model types: {known})"),
    ):
        if (path / file).is_file():
            name = read_meta_file(path / file).get(key)
            if name not in registry:
                raise CheckpointError(f"{path}: " + unknown.format(name=name, known=", ".join(sorted(registry))))
            return registry[name](path)
    raise CheckpointError(f"{path}: neither an attnkit run ({RUN_FILE}) nor a Hugging Face directory "
                          f"({HF_CONFIG_FILE})")


def _lookup(registry: dict[str, Loader], name: str, what: str) -> Loader:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r} (registered: {', '.join(sorted(registry))})")
    return registry[name]
