"""Run the app on uvicorn: bind the socket first (so that ``--port 0`` can report the port it got), then
serve until SIGTERM or SIGINT, which stop accepting connections, let the requests in flight finish, stop
the model workers and return (exit status 0)."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn's server, except that a signal that asked for a graceful shutdown is not raised again after
    it (uvicorn re-raises it, so the process would end by the signal instead of exiting 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(app: Any, sock: socket.socket, graceful_timeout_s: float, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` until a signal asks to stop; in-flight requests get ``graceful_timeout_s``."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.WARNING), stream=sys.stderr,
                        format="attnkit serve: %(levelname)s: %(message)s")
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=int(graceful_timeout_s) + 1,
                            access_log=False, server_header=False, lifespan="on")
    _Server(config).run(sockets=[sock])
