"""The ``attnkit`` command: one sub-command group per module, each registering its own parser.

Every user-facing failure is an :class:`attnkit.errors.AttnkitError`; ``main`` prints it as one line and
exits with code 2 (argparse does the same for bad arguments), so users never see a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from attnkit import __version__
from attnkit.cli.stream import Stopped
from attnkit.errors import AttnkitError

# Each module defines ``register(subparsers)``; a parser's ``func(args) -> int | None`` runs the command.
COMMAND_MODULES = [
    "attnkit.cli.demo",
    "attnkit.cli.attention_demo",
    "attnkit.cli.translate",
    "attnkit.cli.lm",
    "attnkit.cli.mlm",
    "attnkit.cli.classify",
    "attnkit.cli.embed",
    "attnkit.cli.viz",
    "attnkit.cli.serve",
    "attnkit.cli.quantize",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnkit", description="Attention mechanisms and the Transformer family (Transformer, GPT, BERT)."
    )
    parser.add_argument("--version", action="version", version=f"attnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except AttnkitError as exc:
        print(f"attnkit: error: {exc}", file=sys.stderr)
        return 2
    except Stopped as exc:  # Ctrl-C / SIGTERM in a streaming command: what was written is whole lines
        print(f"attnkit: {exc}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        # The estimates of attnkit.tasks.limits stop what would not fit before it starts; this is the last
        # resort when one was too low (the message of the estimate's check would have named the option).
        print("attnkit: error: out of memory (try smaller sizes: beam, batch, samples)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error for the user.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
