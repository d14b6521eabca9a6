"""`bard serve` in front of careless or hostile clients (issue 21): each test is one thing a
client does that must not stall, starve or exhaust the server, against a real subprocess on
127.0.0.1, bounded in count and time, stopped by its pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from bard.bench.server_process import start_server as start

from tests.serve.conftest import Server, start_server, stop_server

MAX_ACTIVE = 8


@pytest.fixture(scope="module")
def guarded(tiny_artifact: Path) -> Iterator[Server]:
    running = start_server(tiny_artifact, "--max-active", str(MAX_ACTIVE), "--max-queued", "16",
                           "--max-body-bytes", "100000")
    try:
        yield running
    finally:
        stop_server(running.process)
        assert running.process.returncode in (0, -signal.SIGTERM), running.log
        assert not any("Traceback" in line for line in running.log), running.log


def raw_post(url: str, body: bytes, path: str = "/v1/completions",
             headers: dict[str, str] | None = None) -> socket.socket:
    """A connected socket that has sent one POST (Content-Length framing)."""
    where = urlsplit(url)
    sock = socket.create_connection((where.hostname, where.port), timeout=10)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: "
                 f"application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
                 + body)
    return sock


def active_rows(server: Server) -> int:
    return int(httpx.get(server.url + "/health", timeout=10).json()["active"])


def wait_for(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_openai_error(reply: httpx.Response, status: int, param: str | None = None) -> dict:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


# ------------------------------------------------------------------------ row 1: disconnects
def test_non_streaming_disconnect_frees_rows(guarded: Server) -> None:
    body = json.dumps({"model": guarded.model, "prompt": "ROMEO:", "max_tokens": 100_000,
                       "seed": 1}).encode()
    sockets = [raw_post(guarded.url, body) for _ in range(MAX_ACTIVE)]
    try:
        assert wait_for(lambda: active_rows(guarded) == MAX_ACTIVE, 20)
    finally:
        for sock in sockets:
            sock.close()
    # 100,000 characters a row would take the tiny model many seconds; freed at once instead
    assert wait_for(lambda: active_rows(guarded) == 0, 3), httpx.get(guarded.url + "/health").text
    reply = httpx.post(guarded.url + "/v1/completions", timeout=10,
                       json={"model": guarded.model, "prompt": "A", "max_tokens": 40})
    assert reply.status_code == 200 and len(reply.json()["choices"][0]["text"]) == 40


# -------------------------------------------------------------------- row 2: bounded stops
@pytest.mark.parametrize("stop", [["e" * 1025], ["e"] * 17])
def test_stop_strings_are_bounded(guarded: Server, stop: list[str]) -> None:
    reply = httpx.post(guarded.url + "/v1/completions", timeout=10,
                       json={"model": guarded.model, "prompt": "A", "max_tokens": 5,
                             "stop": stop})
    assert "1024" in assert_openai_error(reply, 400, "stop")["message"] or len(stop) == 17


# ----------------------------------------------------------------- row 4: body size limit
def test_large_body_is_413_while_reading(guarded: Server) -> None:
    big = json.dumps({"model": guarded.model, "prompt": "A" * 200_000}).encode()
    reply = httpx.post(guarded.url + "/v1/completions", content=big, timeout=10,
                       headers={"Content-Type": "application/json"})
    assert_openai_error(reply, 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        for _ in range(50):
            yield b" " * 10_000

    chunked = httpx.post(guarded.url + "/v1/completions", content=chunks(), timeout=10,
                         headers={"Content-Type": "application/json"})
    assert_openai_error(chunked, 413)
    small = httpx.post(guarded.url + "/v1/completions", timeout=10,
                       json={"model": guarded.model, "prompt": "A", "max_tokens": 3})
    assert small.status_code == 200


# ------------------------------------------------------ row 9: never fits / fair share
def test_request_that_can_never_fit_is_400_and_fair_share(guarded: Server) -> None:
    never = httpx.post(guarded.url + "/v1/completions", timeout=10,
                       json={"model": guarded.model, "prompt": ["A"] * 6, "n": 64,
                             "max_tokens": 1})
    assert_openai_error(never, 400, "n")
    share = MAX_ACTIVE // 2
    over = httpx.post(guarded.url + "/v1/completions", timeout=10,
                      json={"model": guarded.model, "prompt": "A", "n": share + 1,
                            "max_tokens": 1})
    assert str(share) in assert_openai_error(over, 400, "n")["message"]
    fair = httpx.post(guarded.url + "/v1/completions", timeout=10,
                      json={"model": guarded.model, "prompt": "A", "n": share,
                            "max_tokens": 2})
    assert fair.status_code == 200 and len(fair.json()["choices"]) == share


# ------------------------------------------------------------------ row 5: access control
KEY = "s3cret-key-for-tests"
ORIGIN = "http://allowed.example"


@pytest.fixture(scope="module")
def keyed(tiny_artifact: Path) -> Iterator[Server]:
    """The key from the environment variable, one CORS origin allowed."""
    try:
        running = start(*["--device", "cpu", "--max-active", "4", "--cors-origin", ORIGIN],
                        artifact=tiny_artifact, env={**os.environ, "BARD_API_KEY": KEY})
    except RuntimeError as err:
        raise AssertionError(str(err)) from None
    try:
        yield running
    finally:
        stop_server(running.process)
        assert not any("Traceback" in line for line in running.log), running.log


def test_api_key_is_required_on_every_v1_route(keyed: Server) -> None:
    body = {"model": keyed.model, "prompt": "A", "max_tokens": 3}
    for auth in (None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x"):
        headers = {} if auth is None else {"Authorization": auth}
        for reply in (httpx.post(keyed.url + "/v1/completions", json=body, headers=headers),
                      httpx.get(keyed.url + "/v1/models", headers=headers)):
            assert assert_openai_error(reply, 401)["code"] == "invalid_api_key"
    good = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(keyed.url + "/v1/completions", json=body, headers=good).status_code == 200
    assert httpx.get(keyed.url + "/v1/models", headers=good).status_code == 200
    assert httpx.get(keyed.url + "/health").status_code == 200


def test_cors_only_for_named_origins(keyed: Server, guarded: Server) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(keyed.url + "/v1/completions",
                            headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(keyed.url + "/v1/completions",
                          headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    # off by default: no CORS header for any origin
    plain = httpx.get(guarded.url + "/v1/models", headers={"Origin": ORIGIN})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_loopback_server_refuses_a_rebound_host(guarded: Server) -> None:
    port = urlsplit(guarded.url).port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        reply = httpx.get(guarded.url + "/v1/models", headers={"Host": host})
        assert assert_openai_error(reply, 421)["code"] == "misdirected_request"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert httpx.get(guarded.url + "/v1/models", headers={"Host": host}).status_code == 200


def test_warning_when_exposed_without_a_key() -> None:
    """Checked on the function `bard serve` calls before it binds: tests bind loopback only."""
    from bard.serve.guard import Guard
    from bard.serve.server import front_door

    for host in ("127.0.0.1", "localhost", "::1"):
        guard, warning = front_door(host, Guard())
        assert warning is None and guard.allowed_hosts is not None
    guard, warning = front_door("0.0.0.0", Guard())
    assert warning is not None and "--api-key" in warning and "\n" not in warning
    assert guard.allowed_hosts is None
    assert front_door("192.168.1.5", Guard(api_key="k"))[1] is None


# ------------------------------------------------------ row 10: every error is OpenAI's shape
@pytest.mark.parametrize("content", [b"[" * 50_000 + b"]" * 50_000,  # deeper than Python's stack
                                     b'{"model": "\xff\xfe"}',  # not UTF-8
                                     b'{"max_tokens": ' + b"9" * 4301 + b"}"])  # > int limit
def test_unparseable_bodies_get_openai_errors(guarded: Server, content: bytes) -> None:
    reply = httpx.post(guarded.url + "/v1/completions", content=content, timeout=10,
                       headers={"Content-Type": "application/json"})
    assert_openai_error(reply, 400)


def test_routing_errors_get_openai_errors(guarded: Server) -> None:
    assert_openai_error(httpx.get(guarded.url + "/v1/nothing-here"), 404)
    assert_openai_error(httpx.delete(guarded.url + "/v1/completions"), 405)
    assert_openai_error(httpx.get(guarded.url + "/v1/completions"), 405)


# -------------------------------------------------------------- row 8: graceful shutdown
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_drains_then_ends_cleanly(tiny_artifact: Path, sig: signal.Signals) -> None:
    running = start_server(tiny_artifact, "--max-active", "8", "--drain-s", "1.5")
    url = running.url + "/v1/completions"
    endless = {"model": running.model, "prompt": "A", "max_tokens": 100_000}
    outcomes: dict[str, object] = {}

    def stream(name: str) -> None:
        with httpx.stream("POST", url, json={**endless, "stream": True}, timeout=30) as reply:
            outcomes[name] = [line for line in reply.iter_lines() if line.startswith("data:")]

    def plain(name: str, body: dict) -> None:
        outcomes[name] = httpx.post(url, json=body, timeout=30)

    workers = [threading.Thread(target=stream, args=(f"stream{i}",)) for i in range(2)]
    workers.append(threading.Thread(target=plain, args=("long", endless)))
    try:
        for worker in workers:
            worker.start()
        assert wait_for(lambda: active_rows(running) == 3, 20)
        short = threading.Thread(target=plain, args=("short", {
            "model": running.model, "prompt": "B", "max_tokens": 200}))
        short.start()
        time.sleep(0.2)
        running.process.send_signal(sig)
        for worker in [*workers, short]:
            worker.join(30)
        assert running.process.wait(30) == 0, running.log
    finally:
        stop_server(running.process)
    assert not any("Traceback" in line for line in running.log), running.log
    short_reply = outcomes["short"]
    assert isinstance(short_reply, httpx.Response) and short_reply.status_code == 200
    assert len(short_reply.json()["choices"][0]["text"]) == 200  # finished within the drain
    long_reply = outcomes["long"]
    assert isinstance(long_reply, httpx.Response)
    assert assert_openai_error(long_reply, 503)["code"] == "shutting_down"
    for name in ("stream0", "stream1"):
        events = outcomes[name]
        assert isinstance(events, list) and events, name
        assert "error" in json.loads(events[-1][len("data:"):]), events[-1]


# ------------------------------------------------ row 7: slow clients, too many connections
def connect(server: Server) -> socket.socket:
    where = urlsplit(server.url)
    return socket.create_connection((where.hostname, where.port), timeout=10)


def read_reply(sock: socket.socket) -> str:
    """One HTTP reply, whole: its headers may arrive in one packet and its body in the next."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if sep and length is not None and len(body) >= length:
            break
    return data.decode()


def test_slow_clients_are_cut_off_and_connections_capped(tiny_artifact: Path) -> None:
    running = start_server(tiny_artifact, "--max-active", "2", "--header-timeout-s", "1",
                           "--body-timeout-s", "1", "--max-connections", "4")
    try:
        where = urlsplit(running.url)
        slow_headers = connect(running)  # a byte of headers, then nothing
        slow_headers.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: ")
        assert slow_headers.recv(1024) == b"", "closed after the header deadline"
        slow_headers.close()
        body = json.dumps({"model": running.model, "prompt": "A"}).encode()
        slow_body = connect(running)
        slow_body.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {where.netloc}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                          "\r\n\r\n".encode() + body[:5])
        reply = read_reply(slow_body)
        slow_body.close()
        assert reply.startswith("HTTP/1.1 408"), reply
        assert json.loads(reply.split("\r\n\r\n", 1)[1])["error"]["message"]
        idle = [connect(running) for _ in range(4)]
        try:
            time.sleep(0.3)
            refused = httpx.get(running.url + "/health", timeout=5)
            # OpenAI's error shape (uvicorn's own 503 is plain text), and the way out
            error = assert_openai_error(refused, 503)
            assert (error["type"], error["code"]) == ("server_error", "too_many_connections")
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["connection"] == "close"
        finally:
            for sock in idle:
                sock.close()
        assert wait_for(lambda: httpx.get(running.url + "/health", timeout=5).status_code
                        == 200, 10)
    finally:
        stop_server(running.process)
    assert not any("Traceback" in line for line in running.log), running.log
