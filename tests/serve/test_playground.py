"""The playground page in a real headless browser (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import bard_sdk
import pytest

from tests.serve.conftest import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (make test installs Debian's "
                             "chromium where apt-get is available)")


def test_playground_streams_the_models_text(server: Server, tiny_artifact: Path,
                                            tmp_path: Path) -> None:
    expected = bard_sdk.load(tiny_artifact, device="cpu").generate(
        "JULIET:", 150, temperature=0.5, seed=42)
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM,
                                         args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            assert page.title() == "bard writing room"
            assert page.locator("#model").inner_text() == server.model
            page.fill("#prompt", "JULIET:")
            page.fill("#length", "150")
            page.fill("#seed", "42")
            page.locator("#temperature").evaluate(
                "(el) => { el.value = '0.5'; el.dispatchEvent(new Event('input')); }")
            page.click("#generate")
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('done')",
                timeout=60_000)
            assert page.locator("#generated").text_content() == expected
            assert "150 characters" in page.locator("#status").inner_text()
            # The server sends no probabilities (yet): the room says so instead of colouring.
            assert page.locator("#surprisal").is_disabled()
            shot = page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
            assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            browser.close()
