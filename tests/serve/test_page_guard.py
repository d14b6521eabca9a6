"""The page `bard serve` sends, in a real headless browser (issue 21): text from the manifest or
the command line is text, never code, and with --api-key the page asks for the key."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import bard_sdk
import httpx
import pytest
from bard.bench.server_process import start_server as start

from tests.serve.conftest import start_server, stop_server, write_in_room

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (make test installs Debian's "
                             "chromium where apt-get is available)")

HOSTILE = "x</script><script>window.pwned=1</script><img/src=x/onerror=window.pwned=2>"
KEY = "page-key-for-tests"


def open_page(driver, url: str):  # type: ignore[no-untyped-def]
    browser = driver.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page()
    page.goto(url + "/")
    return browser, page


def test_a_hostile_model_name_is_shown_as_text(tiny_artifact: Path) -> None:
    running = start_server(tiny_artifact, "--max-active", "2", "--name", HOSTILE)
    try:
        html = httpx.get(running.url + "/").text
        assert "window.pwned" not in html  # nothing from the manifest or CLI is templated in
        with playwright_api.sync_playwright() as driver:
            browser, page = open_page(driver, running.url)
            try:
                page.wait_for_function(
                    "document.getElementById('model').textContent !== '…'", timeout=30_000)
                assert page.locator("#model").inner_text() == HOSTILE
                assert page.evaluate("window.pwned") is None
            finally:
                browser.close()
    finally:
        stop_server(running.process)


def test_the_page_asks_for_the_api_key(tiny_artifact: Path) -> None:
    expected = bard_sdk.load(tiny_artifact, device="cpu").generate("JULIET:", 40, seed=3,
                                                                    temperature=0.5)
    try:
        running = start(*["--device", "cpu", "--max-active", "2"], artifact=tiny_artifact,
                        env={**os.environ, "BARD_API_KEY": KEY})
    except RuntimeError as err:
        raise AssertionError(str(err)) from None
    asked: list[str] = []
    try:
        with playwright_api.sync_playwright() as driver:
            browser, page = open_page(driver, running.url)
            page.on("dialog", lambda dialog: (asked.append(dialog.message),
                                              dialog.accept(KEY)))
            try:
                write_in_room(page, "JULIET:", 40, temperature="0.5", seed=3)
                assert page.locator("#generated").text_content() == expected
                assert len(asked) == 1 and "API key" in asked[0]
            finally:
                browser.close()
    finally:
        stop_server(running.process)
