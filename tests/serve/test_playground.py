"""The playground page `bard serve` sends, in a real headless browser (Debian's chromium,
driven by Playwright): the server's text, coloured by each character's surprisal from the
server's `logprobs`, its alternatives, and a branch from one of them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bard_sdk
import numpy as np
import pytest

from tests.conftest import log_probs
from tests.serve.conftest import Server, write_in_room

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (make test installs Debian's "
                             "chromium where apt-get is available)")


@pytest.fixture
def page(server: Server) -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM,
                                         args=["--no-sandbox", "--disable-gpu"])
        try:
            opened = browser.new_page()
            opened.goto(server.url + "/")
            yield opened
        finally:
            browser.close()


def surprisals(page: Any, where: str) -> list[float]:
    return [float(s) if s is not None else float("nan") for s in page.locator(where).evaluate_all(
        "(all) => all.map((s) => s.dataset.surprisal ?? null)")]


def test_playground_streams_the_models_seeded_text(server: Server, tiny_artifact: Path,
                                                   page: Any, tmp_path: Path) -> None:
    expected = bard_sdk.load(tiny_artifact, device="cpu").generate(
        "JULIET:", 150, temperature=0.5, seed=42)
    assert page.title() == "bard writing room"
    assert page.locator("#model").inner_text() == server.model
    write_in_room(page, "JULIET:", 150, temperature="0.5", seed=42)
    assert page.locator("#generated").text_content() == expected
    assert "150 characters" in page.locator("#status").inner_text()
    assert page.locator("#surprisal").is_enabled()
    shot = page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"


def test_playground_colours_shows_alternatives_and_branches(tiny_artifact: Path,
                                                            page: Any) -> None:
    """The server's logprobs give the page what the browser's own model gives a `bard web`
    site: -log p per character (prompt included), the top 10 alternatives, a branch."""
    model = bard_sdk.load(tiny_artifact, device="cpu")
    prompt, length, at = "ROMEO:\nO", 60, 12
    expected = model.generate(prompt, length, temperature=0)
    write_in_room(page, prompt, length, temperature="0")
    assert page.locator("#generated").text_content() == expected
    table = log_probs(model, prompt + expected)
    ids = model.encode(prompt + expected)
    shown = surprisals(page, "#generated .ch")
    want = [-table[len(prompt) - 1 + i, ids[len(prompt) + i]] for i in range(length)]
    assert np.allclose(shown, want, atol=1e-4)
    # The echoed prompt is coloured too; its first character has nothing before it.
    shown_prompt = surprisals(page, "#shown-prompt .ch")
    assert len(shown_prompt) == len(prompt) and np.isnan(shown_prompt[0])
    assert np.allclose(shown_prompt[1:], [-table[i - 1, ids[i]] for i in range(1, len(prompt))],
                       atol=1e-4)

    page.locator("#generated .ch").nth(at).click()
    page.wait_for_selector("#alternatives:not([hidden])")
    buttons = page.locator("#alternative-list button")
    offered = buttons.evaluate_all(
        "(all) => all.map((b) => [b.dataset.char, Number(b.dataset.probability)])")
    probs = np.exp(table[len(prompt) - 1 + at])
    top = np.argsort(-probs, kind="stable")[:10]
    assert [c for c, _ in offered[:10]] == [model.vocab.chars[i] for i in top]
    assert np.allclose([p for _, p in offered[:10]], probs[top], atol=1e-5)
    assert page.locator("#alternative-list button.chosen").get_attribute(
        "data-char") == expected[at]

    pick = next(c for c, _ in offered if c != expected[at])
    buttons.nth([c for c, _ in offered].index(pick)).click()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')",
                           timeout=60_000)
    branched = page.locator("#generated").text_content()
    prefix = expected[:at] + pick
    assert branched == prefix + model.generate(prompt + prefix, length - at - 1, temperature=0)
    assert branched != expected
