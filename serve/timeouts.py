"""Slow or many clients cannot hold connections: a deadline for a request's headers (uvicorn
has none: a client that sends a byte every few seconds would keep its connection, and a file
descriptor, forever) on top of uvicorn's keep-alive timeout, and a cap on connections.

`GuardedProtocol` is uvicorn's httptools protocol with one timer: started when a connection
opens and when a new request's first byte arrives, cancelled once its headers are complete; if
it fires first, the connection is closed. And it counts connections as uvicorn's
`limit_concurrency` does (open connections, or requests running), but the request past the cap
gets a 503 in OpenAI's shape (uvicorn's is plain text) and its connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .guard import connection_limit_reached

DEFAULT_HEADER_TIMEOUT_S = 10.0


class GuardedProtocol(HttpToolsProtocol):
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timer: asyncio.TimerHandle | None = None

    def start_header_timer(self) -> None:
        self.cancel_header_timer()
        self.header_timer = self.loop.call_later(self.header_timeout_s, self.headers_too_slow)

    def cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def headers_too_slow(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.start_header_timer()

    def on_headers_complete(self) -> None:
        self.cancel_header_timer()
        cap = self.max_connections
        if cap is None or (len(self.connections) <= cap and len(self.tasks) < cap):
            super().on_headers_complete()
            return
        # This one request (this connection's protocol) is answered by the refusal instead.
        app, self.app = self.app, connection_limit_reached
        try:
            super().on_headers_complete()
        finally:
            self.app = app


def guarded_protocol(header_timeout_s: float, max_connections: int | None
                     ) -> type[GuardedProtocol]:
    """The protocol class with its deadline and cap (uvicorn builds one per connection)."""
    return type("Guarded", (GuardedProtocol,), {"header_timeout_s": header_timeout_s,
                                                "max_connections": max_connections})
