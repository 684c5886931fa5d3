"""The chat options of ``attnkit lm sample``: the messages a checkpoint's chat template is applied to.

    attnkit lm sample DIR --chat --prompt "Hello!"                       one user message
    attnkit lm sample DIR --message system:"Be brief." --message user:"Name a colour."
    attnkit lm sample DIR --messages chat.json          [{"role": "user", "content": "..."}, ...]

Any of ``--message`` / ``--messages`` implies ``--chat``; the reply alone is printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnkit.cli.textarg import utf8_text
from attnkit.errors import InputError
from attnkit.tokenizers.chat import check_messages


def _message(value: str) -> dict:
    text = utf8_text(value)
    role, sep, content = text.partition(":")
    if not sep or not role.strip():
        raise argparse.ArgumentTypeError(f"expected ROLE:TEXT (e.g. user:Hello), got {value!r}")
    return {"role": role.strip(), "content": content}


def add_chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chat", action="store_true",
                   help="apply the checkpoint's chat template (the prompt is one user message)")
    p.add_argument("--message", action="append", type=_message, metavar="ROLE:TEXT",
                   help="a chat message (repeat for a conversation; implies --chat)")
    p.add_argument("--messages", metavar="FILE", help="a JSON file with a list of {role, content} (implies --chat)")


def read_messages(args: argparse.Namespace) -> list[dict] | None:
    """The conversation the options give, or None when not chatting."""
    if args.messages is not None and args.message:
        raise InputError("give --messages FILE or --message ROLE:TEXT, not both")
    if args.messages is not None:
        path = Path(args.messages)
        try:
            messages = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a readable JSON file ({exc})") from None
        if not isinstance(messages, list):
            raise InputError(f"{path}: must hold a JSON list of messages")
        return check_messages(messages)
    if args.message:
        return check_messages(args.message)
    if args.chat:
        return check_messages([{"role": "user", "content": args.prompt}])
    return None
