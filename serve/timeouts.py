"""Slow clients cannot hold connections: a deadline for a request's headers (uvicorn has none:
a client that sends a byte every few seconds would keep its connection, and a file descriptor,
forever) on top of uvicorn's keep-alive timeout and `limit_concurrency` cap.

`HeaderTimeoutProtocol` is uvicorn's httptools protocol with one timer: started when a
connection opens and when a new request's first byte arrives, cancelled once its headers are
complete; if it fires first, the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT_S = 10.0


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S

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
        super().on_headers_complete()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class with its deadline (uvicorn builds one instance per connection)."""
    return type("HeaderTimeout", (HeaderTimeoutProtocol,), {"header_timeout_s": seconds})
