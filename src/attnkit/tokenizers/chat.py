"""Chat templates: a checkpoint's Jinja template that turns a list of messages into the prompt text.

Rendered the way ``transformers``' ``apply_chat_template`` renders it, so that the text (and its tokens)
are the same: a sandboxed Jinja environment (templates come with downloaded checkpoints) with
``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` filter that does not
escape HTML, ``raise_exception`` and ``strftime_now``, a ``{% generation %}`` block that renders its body,
the messages without their None-valued keys, and the tokenizer's special tokens (``bos_token``,
``eos_token``, ...) as variables beside ``messages``, ``tools``, ``documents`` and
``add_generation_prompt``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from attnkit.errors import InputError

ROLES = ("system", "user", "assistant", "tool")


class _Generation(Extension):
    """``{% generation %}...{% endgeneration %}`` (marks the assistant's tokens for training masks in
    transformers): here it renders its body unchanged, as transformers does when not tracking."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller) -> str:  # noqa: ANN001
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The messages as plain dicts without None-valued keys; InputError unless each has a role and content."""
    if not messages:
        raise InputError("a chat needs at least one message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise InputError(f"chat message {i} must be an object with 'role' and 'content', got {m!r}")
        out.append({k: v for k, v in m.items() if v is not None})
    return out


def render_chat(template: str, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                special_tokens: Mapping[str, str] | None = None) -> str:
    """The prompt text of ``messages`` ([{"role": ..., "content": ...}, ...]) under ``template``;
    ``add_generation_prompt`` opens the assistant's turn. InputError when the template rejects the chat
    (e.g. roles out of order) or cannot be compiled."""
    chat = check_messages(messages)
    try:
        return _compile(template).render(messages=chat, tools=None, documents=None,
                                         add_generation_prompt=add_generation_prompt, **dict(special_tokens or {}))
    except jinja2.exceptions.TemplateError as exc:
        raise InputError(f"the chat template rejects these messages: {exc}") from None
