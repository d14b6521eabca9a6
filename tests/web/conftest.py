"""A `bard web` site in a real headless browser: Debian's chromium driven by Playwright.

Sites are written with the onnxruntime-web that `make test` installs from web/package-lock.json
(so they work offline), served by `python -m bard.web.preview` on 127.0.0.1 and a port the
kernel picks, and stopped by the pid of the process the fixture started. The browser may only
reach that server: any other request is refused and recorded, and a test that made one fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

ORT_PACKAGE = ROOT / "web" / "node_modules" / "onnxruntime-web"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def needs_browser() -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (make test installs Debian's chromium where "
                    "apt-get is available)")
    if not (ORT_PACKAGE / "package.json").is_file():
        pytest.skip("no onnxruntime-web in web/node_modules (make web-runtime installs it "
                    "with npm)")
    pytest.importorskip("playwright.sync_api")


@dataclass
class SiteServer:
    process: subprocess.Popen[str]
    url: str


def start_site_server(site: Path) -> SiteServer:
    process = subprocess.Popen([sys.executable, "-m", "bard.web.preview", str(site), "--port",
                                "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    assert process.stderr is not None
    line = process.stderr.readline()  # the server prints its URL first, or fails
    match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    if match is None:
        stop_process(process)
        raise AssertionError(f"the site server did not start: {line}{process.stderr.read()}")
    return SiteServer(process, match.group(1))


def stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def write_site(artifact: Path | None, out: Path, runtime: str | None = None) -> Path:
    from bard.web.site import SiteRequest, build_site

    build_site(SiteRequest(out=out, model=artifact, runtime=runtime or str(ORT_PACKAGE),
                           webgpu=False))
    return out


@dataclass
class Browser:
    """One chromium for the session; `open` gives a fresh page on a site, model loaded."""

    context: Any
    outside: list[str] = field(default_factory=list)  # requests refused: not the loopback

    def open(self, url: str, timeout: float = 60_000, routes: dict[str, Any] | None = None,
             expect: str = "ready") -> Any:
        """A page on `url` once the room is ready (or, with `expect`, has failed saying so);
        `routes`: URL pattern -> Playwright route handler, for this page only."""
        page = self.context.new_page()
        for pattern, handler in (routes or {}).items():
            page.route(pattern, handler)
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready === 'true' || "
                               "document.getElementById('status').className === 'error'",
                               timeout=timeout)
        status = page.locator("#status").inner_text()
        assert expect in status, (status, errors)
        return page


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    needs_browser()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="bard-chromium-")
    try:
        with sync_playwright() as driver:
            context = driver.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            session = Browser(context)

            def only_loopback(route: Any) -> None:
                url = route.request.url
                if url.startswith("http://127.0.0.1:") or url.startswith("data:"):
                    route.continue_()
                else:
                    session.outside.append(url)
                    route.abort()

            context.route("**/*", only_loopback)
            try:
                yield session
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert not session.outside, f"the page reached outside the machine: {session.outside}"


@pytest.fixture(scope="session")
def tiny_site(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[SiteServer]:
    needs_browser()
    site = write_site(tiny_artifact, tmp_path_factory.mktemp("sites") / "tiny")
    server = start_site_server(site)
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture(scope="session")
def shipped_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteServer]:
    needs_browser()
    site = write_site(None, tmp_path_factory.mktemp("sites") / "shipped")
    server = start_site_server(site)
    try:
        yield server
    finally:
        stop_process(server.process)
