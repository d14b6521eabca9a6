"""A `bard serve` subprocess on 127.0.0.1 and a port the kernel picks, for tests and benches.

The server is started with `--port 0`; its ready line (serve/settings.py) names the URL. It is
stopped by the pid of the process started here (SIGTERM, then SIGKILL if it does not leave),
never by a name pattern. Its stderr is drained into `log` (a full pipe would block it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bard.serve.settings import parse_ready

BARD = (sys.executable, "-m", "bard")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str
    model: str
    log: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/{self.pid}/status has no VmRSS line")

    def stop(self) -> None:
        stop_server(self.process)

    def failure(self, err: Exception) -> RuntimeError:
        """An error for clients that failed, with the server's state and last stderr lines."""
        state = ("running" if self.process.poll() is None
                 else f"exited with {self.process.returncode}")
        tail = "\n".join(line.rstrip() for line in self.log[-20:]) or "(nothing on stderr)"
        return RuntimeError(f"HTTP clients failed ({type(err).__name__}: {err}); bard serve "
                            f"is {state}; its last stderr lines:\n{tail}")


def start_server(*options: str, artifact: Path | None = None,
                 program: Sequence[str] = BARD, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 60,
                 new_session: bool = False) -> ServerProcess:
    """`bard serve --port 0 [--model ARTIFACT] OPTIONS...`, once /health answers 200.
    `new_session`: the server leads a session of its own, so everything it starts (Ray's
    processes) can be found by that session id, which is the server's pid."""
    command = [*program, "serve", "--port", "0",
               *(["--model", str(artifact)] if artifact is not None else []), *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
                               cwd=cwd, start_new_session=new_session)
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    ready = None
    for line in process.stderr:
        ready = parse_ready(line)
        if ready is not None or time.monotonic() > deadline:
            break
    if ready is None:
        stop_server(process)
        raise RuntimeError(f"bard serve did not start: {process.stderr.read()}")
    server = ServerProcess(process, ready[1], ready[0])
    threading.Thread(target=lambda: server.log.extend(process.stderr),  # type: ignore[arg-type]
                     daemon=True).start()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    stop_server(process)
    raise RuntimeError("bard serve never became healthy")


def stop_server(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
