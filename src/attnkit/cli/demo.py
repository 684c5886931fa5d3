"""`attnkit demo`: the main job on a built-in default (placeholder, filled in next)."""

from __future__ import annotations

import argparse

from attnkit.errors import AttnkitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="(not built yet)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise AttnkitError("'attnkit demo' is not built yet")
