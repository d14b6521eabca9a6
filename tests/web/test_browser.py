"""bard.js and the writing room in a real browser, against bard_sdk on the same artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bard_sdk
import numpy as np
import pytest

from tests.conftest import SHARED_DATA, log_probs
from tests.web.conftest import Browser, SiteServer

PROMPT = "JULIET:"


@pytest.fixture(scope="module")
def tiny_model(tiny_artifact: Path) -> bard_sdk.Model:
    return bard_sdk.load(tiny_artifact, device="cpu", threads=1)


def test_greedy_300_characters_equal_the_sdk(browser: Browser, shipped_site: SiteServer) -> None:
    expected = bard_sdk.load(device="cpu", threads=1).generate("ROMEO:", 300, temperature=0)
    page = browser.open(shipped_site.url)
    try:
        text = page.evaluate("bard.generate('ROMEO:', {maxNewChars: 300, temperature: 0})")
        streamed = page.evaluate("""async () => {
            let text = '';
            for await (const step of bard.stream('ROMEO:', {maxNewChars: 40, temperature: 0}))
              text += step.char;
            return text; }""")
    finally:
        page.close()
    assert len(expected) == 300
    assert text == expected
    assert streamed == expected[:40]


def test_sampling_is_reproducible_per_seed_and_follows_the_sdk(
        browser: Browser, tiny_site: SiteServer, tiny_model: bard_sdk.Model) -> None:
    options = "{maxNewChars: 200, temperature: 0.9, topK: 30, topP: 0.95, seed: SEED}"
    page = browser.open(tiny_site.url)
    try:
        runs = [page.evaluate(f"bard.generate('{PROMPT}', {options.replace('SEED', str(seed))})")
                for seed in (7, 7, 8)]
        empty = page.evaluate("bard.generate('', {maxNewChars: 50, temperature: 0})")
        stopped = page.evaluate("bard.generate('', {maxNewChars: 300, seed: 3, stop: '\\n'})")
    finally:
        page.close()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    # The browser samples as bard_sdk does (same random stream, same rule): same seed, same text.
    assert runs[0] == tiny_model.generate(PROMPT, 200, temperature=0.9, top_k=30, top_p=0.95,
                                          seed=7)
    assert empty == tiny_model.generate("", 50, temperature=0)  # the empty-prompt rule
    assert stopped == tiny_model.generate("", 300, seed=3, stop="\n")
    assert stopped.endswith("\n")


def held_out_passage() -> str:
    text = (SHARED_DATA / "sonnets.txt").read_text("utf-8")
    return text[len(text) // 2 : len(text) // 2 + 3000]


def test_score_equals_the_sdk_on_held_out_text(browser: Browser, tiny_site: SiteServer,
                                               tiny_model: bard_sdk.Model) -> None:
    passage = held_out_passage()
    unknown = sorted({ch for ch in passage if ch not in tiny_model.vocab})
    if not unknown:  # the sonnets hold characters the Shakespeare vocabulary lacks
        passage = passage + "\u00e9\u2014"
        unknown = ["\u00e9", "\u2014"]
    page = browser.open(tiny_site.url)
    try:
        skipped = page.evaluate("(t) => bard.score(t, {onUnknown: 'skip'})", passage)
        replaced = page.evaluate(
            "(t) => bard.score(t, {onUnknown: 'replace', replacement: ' '})", passage)
        refused = page.evaluate("""(t) => bard.score(t).then(() => null,
                                     (e) => ({name: e.name, message: e.message}))""", passage)
    finally:
        page.close()
    for got, want in ((skipped, tiny_model.score(passage, on_unknown="skip")),
                      (replaced, tiny_model.score(passage, on_unknown="replace",
                                                  replacement=" "))):
        assert got["characters"] == want.characters
        assert abs(got["totalNats"] - want.total_nats) < 1e-4
        assert abs(got["bitsPerChar"] - want.bits_per_char) < 1e-6
    assert refused["name"] == "BardError"
    assert "not in the model's vocabulary" in refused["message"]
    assert repr(unknown[0])[1:-1] in refused["message"] or unknown[0] in refused["message"]


def test_the_room_colours_by_surprisal_and_branches(browser: Browser, tiny_site: SiteServer,
                                                    tiny_model: bard_sdk.Model,
                                                    tmp_path: Path) -> None:
    length, at = 60, 10
    expected = tiny_model.generate(PROMPT, length, temperature=0)
    page = browser.open(tiny_site.url)
    try:
        page.fill("#prompt", PROMPT)
        page.fill("#length", str(length))
        page.locator("#temperature").evaluate(
            "(el) => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent"
                               ".startsWith('done')", timeout=60_000)
        assert page.locator("#generated").text_content() == expected
        spans = page.locator("#generated .ch")
        assert spans.count() == length
        # Each character's colour is its surprisal under the model, -log p, as the SDK says.
        surprisal = [float(s) for s in spans.evaluate_all(
            "(all) => all.map((s) => s.dataset.surprisal)")]
        table = log_probs(tiny_model, PROMPT + expected)
        ids = tiny_model.encode(PROMPT + expected)
        want = [-table[len(PROMPT) - 1 + i, ids[len(PROMPT) + i]] for i in range(length)]
        assert np.allclose(surprisal, want, atol=1e-4)
        hot = int(np.argmax(want))
        background = "(el) => getComputedStyle(el).backgroundColor"
        coloured = spans.nth(hot).evaluate(background)
        assert coloured not in ("rgba(0, 0, 0, 0)", "transparent")
        page.uncheck("#surprisal")
        assert spans.nth(hot).evaluate(background) == "rgba(0, 0, 0, 0)"
        page.check("#surprisal")
        assert spans.nth(hot).evaluate(background) == coloured

        # Tap a character: the model's top alternatives there, with the SDK's probabilities.
        spans.nth(at).click()
        page.wait_for_selector("#alternatives:not([hidden])")
        buttons = page.locator("#alternative-list button")
        shown = buttons.evaluate_all(
            "(all) => all.map((b) => [b.dataset.char, Number(b.dataset.probability)])")
        probs = np.exp(table[len(PROMPT) - 1 + at])
        top = np.argsort(-probs, kind="stable")[:10]
        assert [c for c, _ in shown[:10]] == [tiny_model.vocab.chars[i] for i in top]
        assert np.allclose([p for _, p in shown[:10]], probs[top], atol=1e-5)
        assert page.locator("#alternative-list button.chosen").get_attribute(
            "data-char") == expected[at]
        page.screenshot(path=str(tmp_path / "room.png"), full_page=True)

        # Pick another: the text goes on from the state forked there.
        pick = next(c for c, _ in shown if c != expected[at])
        buttons.locator(f"xpath=//self::*[@data-char={xpath_literal(pick)}]").click()
        page.wait_for_function("document.getElementById('status').textContent"
                               ".startsWith('done')", timeout=60_000)
        branched = page.locator("#generated").text_content()
    finally:
        page.close()
    prefix = expected[:at] + pick
    assert branched == prefix + tiny_model.generate(PROMPT + prefix, length - at - 1,
                                                    temperature=0)
    assert branched != expected


def xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    return 'concat(' + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def test_manifest_text_reaches_the_page_as_text_only(browser: Browser, artifact_copy: Path,
                                                     tmp_path: Path) -> None:
    import json

    from tests.web.conftest import start_site_server, stop_process, write_site

    hostile = '<img src=x onerror="window.pwned=1"></code><script>window.pwned=2</script>'
    manifest = artifact_copy / "manifest.json"
    raw = json.loads(manifest.read_text("utf-8"))
    raw["name"] = hostile
    manifest.write_text(json.dumps(raw), "utf-8")
    server = start_site_server(write_site(artifact_copy, tmp_path / "site"))
    try:
        page = browser.open(server.url)
        try:
            assert page.locator("#model").inner_text() == hostile
            assert page.evaluate("window.pwned === undefined")
            assert page.locator("img").count() == 0
        finally:
            page.close()
    finally:
        stop_process(server.process)


def test_bad_options_are_refused_before_any_work(browser: Browser, tiny_site: SiteServer,
                                                 tiny_model: bard_sdk.Model) -> None:
    cases = {
        "{max_new_chars: 5}": ("unknown option", "max_new_chars"),
        "{temperature: -1}": ("temperature must be a number >= 0", "temperature"),
        "{temperature: NaN}": ("temperature must be a number >= 0", "temperature"),
        "{topK: 0}": ("topK must be an integer in [1,", "topK"),
        "{topP: 1.5}": ("topP must be a number in (0, 1]", "topP"),
        "{seed: -1}": ("seed must be an integer in [0, 2**64)", "seed"),
        "{maxNewChars: 2.5}": ("maxNewChars must be an integer", "maxNewChars"),
        "{stop: '\\u00e9'}": ("can never occur", "stop"),
        "{onUnknown: 'drop'}": ("onUnknown must be", "onUnknown"),
        "{onUnknown: 'replace', replacement: '\\u00e9'}": ("needs a replacement character",
                                                           "replacement"),
    }
    page = browser.open(tiny_site.url)
    try:
        for options, (message, param) in cases.items():
            error = page.evaluate(f"""bard.generate('ROMEO:', {options}).then(() => null,
                (e) => ({{name: e.name, message: e.message, param: e.param}}))""")
            assert error is not None, options
            assert error["name"] == "BardError", (options, error)
            assert message in error["message"], (options, error)
            assert error["param"] == param, (options, error)
        # A seed beyond 2**53 is given as a BigInt and is as good as any other.
        big = page.evaluate("""Promise.all([0, 1].map(() => bard.generate('ROMEO:',
            {maxNewChars: 30, seed: 2n ** 63n + 5n})))""")
        assert big[0] == big[1] == tiny_model.generate("ROMEO:", 30, seed=2**63 + 5)
    finally:
        page.close()


def cdn_from_npm(tamper: str | None = None) -> Any:
    """A route handler that answers the pinned CDN URLs with the npm package's files (as
    jsDelivr would, CORS headers included); `tamper` names a file to answer altered."""
    from bard.web.runtime import CDN_BASE

    from tests.web.conftest import ORT_PACKAGE

    def handler(route: Any) -> None:
        name = route.request.url[len(CDN_BASE):]
        body = (ORT_PACKAGE / "dist" / name).read_bytes()
        if name == tamper:
            body = body[:-1] + bytes([body[-1] ^ 1])
        kind = "application/wasm" if name.endswith(".wasm") else "text/javascript"
        route.fulfill(status=200, body=body, headers={
            "Content-Type": kind, "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin"})
    return handler


def test_the_default_cdn_site_runs_pinned_and_refuses_an_altered_runtime(
        browser: Browser, tiny_artifact: Path, tiny_model: bard_sdk.Model,
        tmp_path: Path) -> None:
    from bard.web.runtime import CDN_BASE

    from tests.web.conftest import start_site_server, stop_process, write_site

    server = start_site_server(write_site(tiny_artifact, tmp_path / "site", runtime="cdn"))
    try:
        page = browser.open(server.url, routes={CDN_BASE + "**": cdn_from_npm()})
        try:
            text = page.evaluate("bard.generate('ROMEO:', {maxNewChars: 40, temperature: 0})")
        finally:
            page.close()
        assert text == tiny_model.generate("ROMEO:", 40, temperature=0)
        # One changed byte (the .mjs stays valid JavaScript): the page refuses it by its hash.
        for altered, refusal in (("ort-wasm-simd-threaded.wasm",
                                  "error: cannot fetch onnxruntime-web binary"),
                                 ("ort.wasm.min.mjs", "error: cannot load onnxruntime-web")):
            page = browser.open(server.url, expect=refusal,
                                routes={CDN_BASE + "**": cdn_from_npm(tamper=altered)})
            page.close()
    finally:
        stop_process(server.process)


def test_sessions_feed_fork_and_continue_as_the_sdk(browser: Browser, tiny_site: SiteServer,
                                                    tiny_model: bard_sdk.Model) -> None:
    page = browser.open(tiny_site.url)
    try:
        got = page.evaluate("""async () => {
            const s = await bard.session('ROMEO:');
            const fork = s.fork();
            const first = await s.generate(30, {temperature: 0});
            const again = await fork.generate(30, {temperature: 0});
            const fed = Array.from(await fork.feed('\\nJULIET:'));
            const after = await fork.generate(20, {temperature: 0});
            return {first, again, fed, after, top: s.top(3), length: s.length}; }""")
    finally:
        page.close()
    first = tiny_model.generate("ROMEO:", 30, temperature=0)
    assert got["first"] == got["again"] == first
    text = "ROMEO:" + first + "\nJULIET:"
    assert got["after"] == tiny_model.generate(text, 20, temperature=0)
    table = log_probs(tiny_model, text)
    ids = tiny_model.encode(text)
    start = len("ROMEO:") + 30
    want = [-table[start - 1 + i, ids[start + i]] for i in range(len("\nJULIET:"))]
    assert np.allclose(got["fed"], want, atol=1e-4)
    session = tiny_model.session("ROMEO:" + first)
    probs = np.exp(session.logits[0].astype(np.float64) - session.logits[0].max())
    probs /= probs.sum()
    assert [t["char"] for t in got["top"]] == [tiny_model.vocab.chars[i]
                                               for i in np.argsort(-probs, kind="stable")[:3]]
    assert got["length"] == len("ROMEO:") + 30
