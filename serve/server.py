"""`bard serve`: load an artifact, start its engine, serve it with uvicorn on one socket.

The socket is bound before uvicorn starts, so `--port 0` works: the line printed on start
names the port the kernel chose (tests and scripts read it instead of guessing a free port).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn
from bard_sdk import Engine

from .app import create_app
from .guard import front_door
from .settings import ServeSettings, build_engine, print_ready
from .timeouts import DEFAULT_HEADER_TIMEOUT_S, guarded_protocol

__all__ = ["ServeOptions", "front_door", "serve"]

# Longer than any client pool keeps an idle connection (httpx and so the openai client: 5 s),
# so the client always closes first. Equal timeouts race: a client reuses a connection at the
# moment the server closes it, and its request fails (seen at 128 streaming callers).
KEEP_ALIVE_S = 75
# On SIGTERM/SIGINT, requests in flight get `drain_s` to finish (--drain-s), then the engine
# closes and what is left ends with an error; FLUSH_S more lets those last replies go out.
FLUSH_S = 2.0
# Connections (and requests in them) at once; past it a 503 at once (timeouts.py), so a
# flood of idle sockets cannot use up the process's file descriptors.
DEFAULT_MAX_CONNECTIONS = 512


@dataclass(frozen=True)
class ServeOptions:
    """`bard serve`: what to serve (the settings Ray replicas share, the front door and the
    drain included) and where to listen, with the connection limits of its own HTTP server
    (under Ray, Ray's proxy owns the connections)."""

    settings: ServeSettings = field(default_factory=ServeSettings)
    host: str = "127.0.0.1"
    port: int = 8000
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class DrainingServer(uvicorn.Server):
    """uvicorn, stopped gracefully: on SIGTERM/SIGINT it stops accepting, lets requests in
    flight finish for `drain_s`, then closes the engine, so what is left ends cleanly (a
    stream with an error event, a plain request with a 503), and the process exits 0."""

    def __init__(self, config: uvicorn.Config, engine: Engine, drain_s: float) -> None:
        super().__init__(config)
        self.engine, self.drain_s = engine, drain_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().call_later(self.drain_s, self.engine.close)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM start the shutdown; unlike uvicorn's own, the signal is not
        raised again afterwards: a drained server exits 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(options: ServeOptions) -> None:
    """Run until SIGINT/SIGTERM; the engine closes with the app."""
    settings = options.settings
    served = build_engine(settings)
    guard, warning = front_door(options.host, settings.guard())
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    app = create_app(served.engine, served.model_id, guard=guard)
    sock = bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    print_ready(served.model_id, served.model.device, host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=settings.drain_s + FLUSH_S,
                            timeout_keep_alive=KEEP_ALIVE_S,
                            http=guarded_protocol(options.header_timeout_s,
                                                  options.max_connections))
    try:
        DrainingServer(config, served.engine, settings.drain_s).run(sockets=[sock])
    finally:
        served.engine.close()
        sock.close()
