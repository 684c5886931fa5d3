"""``attnkit serve MODEL [MODEL ...]``: the models behind an HTTP API (docs/serve.md)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from attnkit.cli.common import add_dtype_arg, dtype_note
from attnkit.errors import InputError

API_KEY_ENV = "ATTNKIT_API_KEY"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP (translate, generate, embed, classify, attention)",
                       description="Serve attnkit runs and Hugging Face directories over HTTP with dynamic "
                                   "batching. See docs/serve.md.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="a run or Hugging Face directory, or NAME=DIR to choose its name (default: the folder name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine "
                                                         "only; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--api-key", default=None,
                   help=f"require this key on every endpoint but /health (default: ${API_KEY_ENV}, if set)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable; default: none)")
    p.add_argument("--no-batching", action="store_true",
                   help="decode one request at a time (the baseline of bench/serve_load.py)")
    p.add_argument("--no-continuous", action="store_true",
                   help="generation: let a batch finish before new requests start (no joining mid-batch)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a request waits for others (5)")
    p.add_argument("--max-batch-rows", type=int, default=32, help="generation rows decoded together (32)")
    p.add_argument("--max-batch-texts", type=int, default=64, help="texts in one batch (64)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting per model before 503 (256)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take (60)")
    p.add_argument("--body-timeout", type=float, default=10.0, help="seconds a client may take to send its body")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body limit (1 MiB)")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request (64)")
    p.add_argument("--max-chars", type=int, default=4000, help="characters per text (4000)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="generated tokens per request (256)")
    p.add_argument("--max-beam", type=int, default=8, help="beam size limit (8)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    add_dtype_arg(p)
    p.set_defaults(func=run)


def model_dirs(specs: list[str]) -> dict[str, Path]:
    """NAME=DIR or DIR arguments -> {name: directory}; InputError for a repeated name."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or "/" in name:
            name, path = Path(spec).resolve().name or spec, spec
        if name in out:
            raise InputError(f"two models are named {name!r}; give one a name: NAME={path}")
        out[name] = Path(path)
    return out


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from attnkit.serve.app import create_app
    from attnkit.serve.limits import BatchConfig, Limits
    from attnkit.serve.server import bind
    from attnkit.serve.server import run as serve
    from attnkit.tasks.runs import open_run

    try:
        limits = Limits(max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout,
                        max_texts=args.max_texts, max_chars=args.max_chars, max_new_tokens=args.max_new_tokens,
                        max_beam=args.max_beam, max_queue=args.max_queue, timeout_s=args.timeout)
        batch = BatchConfig(enabled=not args.no_batching, wait_ms=args.batch_wait_ms, max_rows=args.max_batch_rows,
                            max_texts=args.max_batch_texts, continuous=not args.no_continuous)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    runs = {name: open_run(path, dtype=args.dtype) for name, path in model_dirs(args.models).items()}
    for name, r in runs.items():
        dtype_note(r, args.dtype, name if len(runs) > 1 else "")
    app = create_app(runs, limits, batch, api_key=api_key, cors_origins=tuple(args.cors_origin))
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise InputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not _loopback(args.host):
        print(f"attnkit serve: warning: listening on {args.host}, reachable from other machines"
              + ("" if api_key else " without an API key"), file=sys.stderr)
    print(f"attnkit serve: {len(runs)} model(s) ({', '.join(runs)}) on http://{shown}:{port}", flush=True)
    serve(app, sock, limits.timeout_s, args.log_level)
    print("attnkit serve: stopped", flush=True)
    return 0
