"""The front door of `bard serve`: what a request must be before any route sees it.

Pure ASGI middleware, one job each: a body-size limit counted while the body is read (chunked
bodies too), an API key, a Host-header check for loopback binds (DNS rebinding), and CORS only
for the origins named. Every refusal is an OpenAI-shaped error body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from fastapi.exceptions import HTTPException

from .openai_api import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1_000_000  # 1 MB: the longest prompts allowed (100k chars) fit
DEFAULT_BODY_TIMEOUT_S = 30.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True)
class Guard:
    """The front door's settings. `front_door` fills in the Host names of a loopback bind."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    # Host headers accepted (names without port); None accepts any.
    allowed_hosts: frozenset[str] | None = None


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passes the limit; FastAPI re-raises it as is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes (--max-body-bytes)")


async def send_error(send: Send, status: int, message: str, kind: str = "invalid_request_error",
                     code: str | None = None, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error_body(message, kind, code=code), allow_nan=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class BodyTooSlow(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s "
                              "(--body-timeout-s)")


class BodyLimit:
    """413 for a body over `limit` bytes: at once from its Content-Length, or as soon as the
    bytes read pass it (a chunked body has no length to trust); 408 when the next part of the
    body takes longer than `timeout_s` to arrive."""

    def __init__(self, app: Asgi, limit: int, timeout_s: float = DEFAULT_BODY_TIMEOUT_S
                 ) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await send_error(send, 413, f"request body is larger than {self.limit} bytes "
                                        "(--max-body-bytes)", code="body_too_large")
            return
        received, complete = 0, False

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what comes next is the disconnect, whenever
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                raise BodyTooSlow(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


class ApiKey:
    """Every /v1 route needs `Authorization: Bearer KEY`; anything else is a 401. The key is
    compared in constant time. /health and the page stay open (the page asks for the key)."""

    def __init__(self, app: Asgi, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1") \
                and scope.get("method") != "OPTIONS":
            given = (header(scope, b"authorization") or "").encode("latin-1")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                await send_error(send, 401, "missing or wrong API key: send the header "
                                            "'Authorization: Bearer KEY' (--api-key)",
                                 code="invalid_api_key",
                                 headers=[(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


class HostCheck:
    """A loopback server answers only requests addressed to loopback names: a web page whose
    DNS name was rebound to 127.0.0.1 sends its own name as Host and is refused (421)."""

    def __init__(self, app: Asgi, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and host_name(header(scope, b"host") or "") not in self.hosts:
            await send_error(send, 421, "this server answers only requests addressed to "
                                        "127.0.0.1, localhost or ::1 (Host header)",
                             code="misdirected_request")
            return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """The name of a Host header without its port: `[::1]:8000` -> `[::1]`."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def front_door(host: str, guard: Guard) -> tuple[Guard, str | None]:
    """The guard for a server bound to `host`, and the one-line warning to print, if any. A
    loopback bind answers only loopback Host names (DNS rebinding); beyond loopback the names
    are the user's to choose (`allowed_hosts`, default any), and without a key, a warning."""
    if is_loopback(host):
        hosts = LOOPBACK_HOSTS if guard.allowed_hosts is None else guard.allowed_hosts
        return replace(guard, allowed_hosts=hosts), None
    warning = None if guard.api_key is not None else (
        f"bard serve: warning: listening on {host} with no --api-key: anyone who can reach "
        "it can use it")
    return guard, warning


async def connection_limit_reached(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer past `--max-connections`: a 503 in OpenAI's shape, and the connection
    closed (uvicorn's own is plain text)."""
    await send_error(send, 503, "the server has as many connections as it takes "
                                "(--max-connections); retry later", "server_error",
                     code="too_many_connections",
                     headers=[(b"connection", b"close"), (b"retry-after", b"1")])
