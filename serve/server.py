"""`bard serve`: load an artifact, start its engine, serve it with uvicorn on one socket.

The socket is bound before uvicorn starts, so `--port 0` works: the line printed on start
names the port the kernel chose (tests and scripts read it instead of guessing a free port).
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import bard_sdk
import uvicorn
from bard_sdk.display import printable

from .app import create_app

# Longer than any client pool keeps an idle connection (httpx and so the openai client: 5 s),
# so the client always closes first. Equal timeouts race: a client reuses a connection at the
# moment the server closes it, and its request fails (seen at 128 streaming callers).
KEEP_ALIVE_S = 75


@dataclass(frozen=True)
class ServeOptions:
    model: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    variant: str = "fp32"
    threads: int | None = None
    max_active: int = bard_sdk.engine.DEFAULT_MAX_ACTIVE
    max_queued: int = bard_sdk.engine.DEFAULT_MAX_QUEUED
    name: str | None = None


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
    model = bard_sdk.load(options.model, device=options.device, variant=options.variant,
                          threads=options.threads, spin=False)
    engine = bard_sdk.Engine(model, max_active=options.max_active,
                             max_queued=options.max_queued)
    model_id = options.name or model.manifest.name
    app = create_app(engine, model_id)
    sock = bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"bard serve: {printable(model_id)} on {model.device} at http://{shown}:{port} "
          f"(OpenAI API under /v1, playground at /)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_S)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        engine.close()
        sock.close()
