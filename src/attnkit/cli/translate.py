"""`attnkit translate`: placeholder until its issue lands (the command group is registered but not built yet)."""

from __future__ import annotations

import argparse

from attnkit.errors import AttnkitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="(not built yet)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise AttnkitError("'attnkit translate' is not built yet")
