"""`/openapi.json` against the server's real behaviour: for every operation, the status codes
it documents are exactly the ones a list of requests provokes, and every error body has the
documented shape."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bard_sdk
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wrapped
from tests.serve.conftest import Server, start_server, stop_server

KEY = "sesame"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def strict(tiny_artifact: Path) -> Iterator[Server]:
    """Every refusal switched on and easy to reach: a key, a small body limit and timeout,
    one row and one queued request, a few connections."""
    running = start_server(tiny_artifact, "--api-key", KEY, "--max-body-bytes", "4096",
                           "--body-timeout-s", "0.5", "--header-timeout-s", "30",
                           "--max-active", "1", "--max-queued", "1",
                           "--max-connections", str(MAX_CONNECTIONS))
    try:
        yield running
    finally:
        stop_server(running.process)


def call(server: Server, method: str, path: str, **kwargs: object) -> httpx.Response:
    kwargs.setdefault("timeout", 30)
    return httpx.request(method.upper(), server.url + path, **kwargs)  # type: ignore[arg-type]


CHAT = "/v1/chat/completions"


def body(server: Server, path: str = "/v1/completions", **change: object) -> dict[str, object]:
    """A request that works on `path` (completions or chat), with `change` applied."""
    if path == CHAT:
        return {"model": server.model, "max_tokens": 5,
                "messages": [{"role": "user", "content": "Good morrow"}],
                **(endless_reply(server) if change.get("max_tokens") else {}), **change}
    return {"model": server.model, "prompt": "ROMEO:", "max_tokens": 5, **change}


def endless_reply(server: Server) -> dict[str, object]:
    """A reply that runs to max_tokens: a newline is banned, so the turn boundary (a blank
    line) never comes."""
    ids = call(server, "post", "/tokenize", json={"prompt": "\n", "add_special_tokens": False})
    return {"logit_bias": {str(ids.json()["tokens"][0]): -100}}


def address(server: Server) -> tuple[str, int]:
    url = httpx.URL(server.url)
    return str(url.host), int(url.port or 80)


def slow_body(server: Server, path: str) -> int:
    """A body that stops arriving: the status line of the reply."""
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}"
                     "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
                     .encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def over_connections(server: Server, method: str, path: str) -> int:
    """The status of a request made while MAX_CONNECTIONS idle connections are open."""
    with contextlib.ExitStack() as stack:
        for _ in range(MAX_CONNECTIONS):
            stack.enter_context(socket.create_connection(address(server)))
        time.sleep(0.3)
        return call(server, method, path, headers=AUTH).status_code


def rows_full(server: Server, path: str) -> int:
    """One stream generates, one waits: the next request is refused (429)."""
    stop = threading.Event()
    long = body(server, path, max_tokens=100_000, stream=True)

    def hold() -> None:
        with httpx.stream("POST", server.url + path, json=long, headers=AUTH,
                          timeout=60) as reply:
            for _ in reply.iter_bytes():
                if stop.is_set():
                    return

    holders = [threading.Thread(target=hold) for _ in range(2)]
    try:
        for holder in holders:
            holder.start()
            deadline = time.monotonic() + 20
            while (httpx.get(server.url + "/health").json()["active"] == 0
                   and time.monotonic() < deadline):
                time.sleep(0.02)
        time.sleep(0.3)
        return call(server, "post", path, json=body(server, path), headers=AUTH).status_code
    finally:
        stop.set()
        for holder in holders:
            holder.join()


def client_left(server: Server, path: str) -> int:
    """A client that leaves before its reply: the server answers 499 to nobody, which the
    metrics count."""
    def count() -> float:
        text = call(server, "get", "/metrics").text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "bard_requests_total" and s.labels["route"] == path
                   and s.labels["status"] == "499")

    before = count()
    with contextlib.suppress(httpx.TimeoutException):
        call(server, "post", path, json=body(server, path, max_tokens=100_000), headers=AUTH,
             timeout=0.5)
    deadline = time.monotonic() + 20
    while count() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    return 499 if count() > before else 0


def provoke(server: Server, path: str, method: str, code: int) -> int:
    """The status a request chosen to provoke `code` on this operation gets."""
    url_path = path.replace("{name}", server.model if code != 404 else "nope")
    generic: dict[int, Callable[[], int]] = {
        200: lambda: call(server, method, url_path, headers=AUTH,
                          **({"json": body(server, path)} if method == "post" else {})
                          ).status_code,
        401: lambda: call(server, method, url_path).status_code,
        421: lambda: call(server, method, url_path,
                          headers={**AUTH, "Host": "evil.example"}).status_code,
        413: lambda: call(server, method, url_path, headers=AUTH,
                          content=b"x" * 5000).status_code,
        408: lambda: slow_body(server, url_path),
        503: lambda: over_connections(server, method, url_path),
        400: lambda: call(server, method, url_path, headers=AUTH,
                          json=body(server, path, temperature="hot")).status_code,
    }
    specific: dict[tuple[str, int], Callable[[], int]] = {
        ("/v1/completions", 404): lambda: call(server, method, path, headers=AUTH,
                                                json=body(server, model="nope")).status_code,
        ("/v1/completions", 429): lambda: rows_full(server, path),
        ("/v1/completions", 499): lambda: client_left(server, path),
        (CHAT, 404): lambda: call(server, method, path, headers=AUTH,
                                  json=body(server, path, model="nope")).status_code,
        (CHAT, 429): lambda: rows_full(server, path),
        (CHAT, 499): lambda: client_left(server, path),
        ("/v1/models/{name}", 404): lambda: call(server, method, url_path,
                                                  headers=AUTH).status_code,
        ("/tokenize", 200): lambda: call(server, method, path,
                                         json={"prompt": "ROMEO"}).status_code,
        ("/tokenize", 404): lambda: call(server, method, path, json={
            "model": "nope", "prompt": "ROMEO"}).status_code,
        ("/detokenize", 200): lambda: call(server, method, path,
                                           json={"tokens": [1, 2]}).status_code,
        ("/detokenize", 404): lambda: call(server, method, path, json={
            "model": "nope", "tokens": [1]}).status_code,
    }
    if code == 500 and path in ("/v1/completions", CHAT):
        return 500  # a runtime failure: provoked in-process below
    chosen = specific.get((path, code)) or generic.get(code)
    assert chosen is not None, f"no request provokes {code} on {method} {path}: add one"
    return chosen()


def test_every_documented_code_is_provoked_and_nothing_else(strict: Server) -> None:
    document = call(strict, "get", "/openapi.json").json()
    assert "ErrorBody" in document["components"]["schemas"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    mismatches = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = {int(code) for code in operation["responses"]}
            assert 422 not in declared
            for code in sorted(declared):
                got = provoke(strict, path, method, code)
                if got != code:
                    mismatches.append(f"{method} {path}: wanted {code}, got {got}")
    assert not mismatches, mismatches


def test_the_codes_every_route_shares_are_documented(strict: Server) -> None:
    document = call(strict, "get", "/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"200", "413", "421", "503"} <= codes, (method, path)
            assert ("401" in codes) == path.startswith("/v1"), (method, path)
            for code, response in operation["responses"].items():
                if code not in ("200", "499"):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"}


@pytest.mark.parametrize(("method", "path", "status"), [
    ("get", "/no/such/route", 404), ("put", "/v1/completions", 405),
    ("post", "/v1/models", 405)])
def test_error_bodies_have_the_documented_shape(strict: Server, method: str, path: str,
                                                status: int) -> None:
    reply = call(strict, method, path, headers=AUTH)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_a_loopback_server_without_key_documents_no_401(server: Server) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    responses = document["paths"]["/v1/completions"]["post"]["responses"]
    assert "401" not in responses and "421" in responses


def test_a_runtime_failure_is_the_documented_500(tiny_artifact: Path) -> None:
    """The one documented code no request can cause from outside: onnxruntime failing."""
    from bard.serve.app import create_app
    from fastapi.testclient import TestClient

    class Failing:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def state(self, h: object, c: object) -> object:
            return self.inner.state(h, c)  # type: ignore[attr-defined]

        def step(self, tokens: object, state: object) -> object:
            raise RuntimeError("the device fell over")

    model = bard_sdk.load(tiny_artifact, device="cpu")
    failing, _ = wrapped(model, Failing)
    app = create_app(bard_sdk.Engine(failing), "tiny")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        documented = client.get("/openapi.json").json()["paths"]["/v1/completions"]["post"]
        reply = client.post("/v1/completions", json={"model": "tiny", "prompt": "ROMEO:"})
    assert "500" in documented["responses"]
    assert reply.status_code == 500 and reply.json()["error"]["type"] == "server_error"
