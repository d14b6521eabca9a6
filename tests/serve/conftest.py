"""A real `bard serve` process per test module, on 127.0.0.1 and a port the kernel picks.

The server is started with `--port 0`; its start line names the port. It is stopped by the
pid of the process the fixture started (SIGTERM, then SIGKILL if it does not leave).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi", reason="bard serve needs the serve extra")


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    model: str
    log: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def start_server(artifact: Path, *args: str, timeout: float = 60,
                 new_session: bool = False) -> Server:
    """`new_session`: the server leads a session of its own, so everything it starts (Ray's
    processes) can be found by that session id, which is the server's pid."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bard", "serve", "--model", str(artifact), "--port", "0",
         "--device", "cpu", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=new_session)
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    for line in process.stderr:
        match = re.search(r"bard serve: (\S+) on \w+ at (http://\S+)", line)
        if match:
            break
        if time.monotonic() > deadline:
            break
    else:
        match = None
    if match is None:
        stop_server(process)
        raise AssertionError(f"bard serve did not start: {process.stderr.read()}")
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    server = Server(process, match.group(2), match.group(1), log)
    while time.monotonic() < deadline:
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    stop_server(process)
    raise AssertionError("bard serve never became healthy")


def stop_server(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tiny_artifact: Path) -> Iterator[Server]:
    running = start_server(tiny_artifact, "--max-active", "32", "--max-queued", "512")
    try:
        yield running
    finally:
        stop_server(running.process)
        # uvicorn shuts down gracefully, then re-raises SIGTERM as its exit status
        assert running.process.returncode in (0, -signal.SIGTERM), running.log
        assert not any("Traceback" in line for line in running.log), running.log
