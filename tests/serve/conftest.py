"""A real `bard serve` process per test module, on 127.0.0.1 and a port the kernel picks,
started and stopped by the one helper tests and benches share (bard.bench.server_process)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="bard serve needs the serve extra")

from bard.bench.server_process import ServerProcess, stop_server
from bard.bench.server_process import start_server as start

Server = ServerProcess


def start_server(artifact: Path, *args: str, timeout: float = 60,
                 new_session: bool = False) -> Server:
    """`bard serve` on the CPU over `artifact` (the shared helper: bard/bench/server_process)."""
    try:
        return start(*["--device", "cpu", *args], artifact=artifact, timeout=timeout,
                     new_session=new_session)
    except RuntimeError as err:
        raise AssertionError(str(err)) from None


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


def write_in_room(page: Any, prompt: str, length: int, *, temperature: str,
                  seed: int | None = None) -> None:
    """Fill the writing room's form (a Playwright page), press Generate, wait until done."""
    page.wait_for_function("!document.getElementById('generate').disabled", timeout=30_000)
    page.fill("#prompt", prompt)
    page.fill("#length", str(length))
    page.fill("#seed", "" if seed is None else str(seed))
    page.locator("#temperature").evaluate(
        f"(el) => {{ el.value = '{temperature}'; el.dispatchEvent(new Event('input')); }}")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')",
                           timeout=60_000)


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    """The official `openai` client, pointed at this module's server."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)

