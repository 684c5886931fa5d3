"""The tokenizer of a Hugging Face checkpoint directory (Llama, Qwen2, Mistral, ...): ``tokenizer.json``, the
special tokens of ``tokenizer_config.json`` and the chat template (``chat_template.jinja``, or the
``chat_template`` entry of ``tokenizer_config.json``, as older checkpoints store it).

Plain text is encoded as ``tokenizer(text)`` encodes it (the tokenizer's post-processor adds e.g. Llama's
BOS); a chat is rendered by its template (:mod:`attnkit.tokenizers.chat`) and the text encoded without
added special tokens (the template writes them), as ``apply_chat_template`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from attnkit.errors import CheckpointError, InputError
from attnkit.tokenizers.char import TOKENIZER_FILE, TextTokenizer
from attnkit.tokenizers.chat import render_chat

CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
# The named special tokens a chat template sees (transformers' SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class PretrainedTokenizer(TextTokenizer):
    """A TextTokenizer with a checkpoint's special tokens, stop tokens and chat template.

    special_tokens: {"bos_token": "<s>", ...}; chat_template: Jinja text or None; stop_ids: the tokens that
    end a generation (the checkpoint's eos_token_id, possibly several), default the eos_token's id."""

    def __init__(self, tokenizer: Tokenizer, special_tokens: Mapping[str, str] | None = None,
                 chat_template: str | None = None, stop_ids: Sequence[int] = ()) -> None:
        super().__init__(tokenizer)
        self.special_tokens = dict(special_tokens or {})
        self.chat_template = chat_template
        eos = self.special_tokens.get("eos_token")
        eos_id = None if eos is None else tokenizer.token_to_id(eos)
        self._stop_ids = tuple(stop_ids) or (() if eos_id is None else (eos_id,))

    @property
    def eos_id(self) -> int | None:
        return self._stop_ids[0] if self._stop_ids else super().eos_id

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return self._stop_ids or super().stop_ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """text -> token ids, with the post-processor's special tokens (e.g. BOS) unless told otherwise."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def render_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text of a chat under the checkpoint's template (InputError when it has none)."""
        if self.chat_template is None:
            raise InputError("this tokenizer has no chat template (tokenizer_config.json / chat_template.jinja)")
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           special_tokens=self.special_tokens)

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """The token ids of a chat: its rendered text encoded without added special tokens."""
        return self.encode(self.render_chat(messages, add_generation_prompt), add_special_tokens=False)

    def save(self, directory: str | Path) -> Path:
        """tokenizer.json and a tokenizer_config.json (special tokens, chat template) that transformers'
        ``AutoTokenizer`` reads."""
        path = super().save(directory)
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", **self.special_tokens}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (Path(directory) / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                   encoding="utf-8")
        return path


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: must be a JSON object")
    return data


def _chat_template(directory: Path, config: dict) -> str | None:
    if (directory / TEMPLATE_FILE).is_file():
        return (directory / TEMPLATE_FILE).read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # several named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def load_pretrained_tokenizer(directory: str | Path, stop_ids: Sequence[int] = ()) -> PretrainedTokenizer | None:
    """The tokenizer of a checkpoint directory, or None when it has no tokenizer.json. ``stop_ids``: the
    model's end-of-generation ids (its config's eos_token_id)."""
    directory = Path(directory)
    if not (directory / TOKENIZER_FILE).is_file():
        return None
    config = _read_json(directory / CONFIG_FILE) if (directory / CONFIG_FILE).is_file() else {}
    special = {k: t for k in SPECIAL_TOKENS if (t := _token_text(config.get(k))) is not None}
    try:
        tok = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    except Exception as exc:  # the Rust library raises plain Exception
        raise CheckpointError(f"{directory / TOKENIZER_FILE}: not a readable tokenizer ({exc})") from None
    return PretrainedTokenizer(tok, special, _chat_template(directory, config), stop_ids)
