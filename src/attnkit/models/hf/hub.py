"""Checkpoints by name from the Hugging Face Hub (``--hf NAME``): ``huggingface_hub.snapshot_download`` of the
files attnkit reads, into the Hub's own cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``), so a
second call, ``transformers`` and attnkit share one copy. A local directory is used as it is.

    download("Helsinki-NLP/opus-mt-de-en")      # -> .../models--Helsinki-NLP--opus-mt-de-en/snapshots/<commit>

Offline (``HF_HUB_OFFLINE=1``, or ``local_files_only``), a name resolves to its cached snapshot.
"""

from __future__ import annotations

from pathlib import Path

from attnkit.errors import CheckpointError, InputError

# What attnkit reads of a model repository (weights, configs, every tokenizer format it knows).
FILES = ["config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
         "model-*.safetensors", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "vocab.json",
         "target_vocab.json", "source.spm", "target.spm", "sentencepiece.bpe.model", "spm.model", "merges.txt",
         "vocab.txt", "chat_template.jinja"]


def download(name: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
             local_files_only: bool = False) -> Path:
    """The local directory of ``name``: the path itself when it is a directory, else the Hub snapshot of that
    repository (downloaded when missing; pytorch_model.bin only when it has no safetensors weights).
    InputError / CheckpointError with one line when the name is malformed or the download fails."""
    if Path(name).is_dir():
        return Path(name)
    if name.count("/") > 1 or not name.strip("/") or name.startswith(("/", ".")):
        raise InputError(f"--hf {name!r}: neither a directory nor a Hugging Face model name (owner/name)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise InputError("--hf NAME needs the huggingface_hub package (pip install huggingface_hub)") from None
    kw = dict(repo_id=name, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir),
              local_files_only=local_files_only)
    try:
        path = Path(snapshot_download(**kw, allow_patterns=FILES))
        if not any(path.glob("*.safetensors")):
            path = Path(snapshot_download(**kw, allow_patterns=[*FILES, "pytorch_model.bin"]))
    except LocalEntryNotFoundError:
        raise CheckpointError(f"--hf {name}: not in the Hugging Face cache and downloads are off (offline, or no "
                              "network)") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"--hf {name}: cannot download it from the Hugging Face Hub ({first})") from None
    return path
