"""`python -m bard.bench.browser`: characters per second in a real browser beside the SDK's
(BENCHMARKS.md, "In the browser"), and the writing-room screenshots for the README.

A `bard web` site of the artifact (onnxruntime-web from web/node_modules, `make web-runtime`)
is served on 127.0.0.1 (cross-origin isolated, so WASM threads work) and opened in headless
chromium once per configuration: WASM with 1 and with several threads, WebGPU where the browser
offers an adapter. The SDK runs in this process at 1 thread and at its default. Every round
times every configuration once, in turn (rounds alternate the order), generating the same
greedy text; each figure is its median round, so a slow spell of a shared host falls on all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bard_sdk
from bard.training.fsutil import atomic_write_text
from bard.web.preview import make_server, url_of
from bard.web.site import SiteRequest, build_site

ROOT = Path(__file__).resolve().parents[1]
ORT_PACKAGE = ROOT / "web" / "node_modules" / "onnxruntime-web"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PROMPT = "ROMEO:"
READY = ("document.body.dataset.ready === 'true' || "
         "document.getElementById('status').className === 'error'")


@contextmanager
def served(site: Path) -> Iterator[str]:
    server = make_server(site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url_of(server)
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium(executable: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="bard-bench-chromium-")
    try:
        with sync_playwright() as driver:
            context = driver.chromium.launch_persistent_context(
                profile, executable_path=executable, args=CHROMIUM_FLAGS, headless=True,
                viewport={"width": 1280, "height": 900})
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_room(context: Any, url: str) -> Any:
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(READY, timeout=120_000)
    status = page.locator("#status").inner_text()
    if status != "ready":
        page.close()
        raise RuntimeError(status)
    return page


def browser_timer(page: Any, chars: int) -> Callable[[], float]:
    prompt = json.dumps(PROMPT, allow_nan=False)
    script = f"""async () => {{
        const start = performance.now();
        await bard.generate({prompt}, {{maxNewChars: {chars}, temperature: 0}});
        return (performance.now() - start) / 1000; }}"""
    return lambda: float(page.evaluate(script))


def sdk_timer(threads: int | None, chars: int) -> Callable[[], float]:
    model = bard_sdk.load(device="cpu", threads=threads)
    model.generate(PROMPT, 20, temperature=0)

    def run() -> float:
        start = time.perf_counter()
        model.generate(PROMPT, chars, temperature=0)
        return time.perf_counter() - start
    return run


def webgpu_adapter(context: Any, url: str) -> bool:
    page = context.new_page()
    page.goto(url)
    try:
        return bool(page.evaluate("async () => Boolean(navigator.gpu && "
                                  "await navigator.gpu.requestAdapter())"))
    finally:
        page.close()


def measure(context: Any, url: str, chars: int, rounds: int, threads: list[int]
            ) -> dict[str, Any]:
    timers: dict[str, Callable[[], float]] = {
        "sdk, 1 thread": sdk_timer(1, chars), "sdk, default threads": sdk_timer(None, chars)}
    pages = []
    for count in threads:
        page = open_room(context, f"{url}?backend=wasm&threads={count}")
        pages.append(page)
        timers[f"browser wasm, {count} thread{'s' if count > 1 else ''}"] = browser_timer(
            page, chars)
    gpu = webgpu_adapter(context, url)
    if gpu:
        page = open_room(context, f"{url}?backend=webgpu")
        pages.append(page)
        timers["browser webgpu"] = browser_timer(page, chars)
    for timer in timers.values():
        timer()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            seconds[name].append(timers[name]())
    for page in pages:
        page.close()
    rates = {name: chars / statistics.median(s) for name, s in seconds.items()}
    base = rates["sdk, 1 thread"]
    return {"chars_per_s": rates, "ratio_to_sdk_1_thread": {n: r / base for n, r in rates.items()},
            "seconds": seconds, "webgpu_adapter": gpu}


def screenshots(context: Any, url: str, out_dir: Path) -> list[Path]:
    """The room mid-thought: a sampled passage, coloured, one character's alternatives open."""
    made = []
    for name, viewport in (("writing-room.png", {"width": 1180, "height": 860}),
                           ("writing-room-phone.png", {"width": 390, "height": 844})):
        page = open_room(context, url)
        page.set_viewport_size(viewport)
        page.fill("#length", "360")
        page.fill("#seed", "11")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent"
                               ".startsWith('done')", timeout=120_000)
        hot = page.locator("#generated .ch").evaluate_all(
            "(all) => all.slice(0, 200).reduce((best, s, i) => "
            "Number(s.dataset.surprisal) > Number(all[best].dataset.surprisal) ? i : best, 0)")
        page.locator("#generated .ch").nth(hot).click()
        page.wait_for_selector("#alternatives:not([hidden])")
        path = out_dir / name
        page.screenshot(path=str(path), full_page=name == "writing-room.png")
        made.append(path)
        page.close()
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=Path("docs/bench/browser.json"))
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="Also write writing-room.png and writing-room-phone.png here.")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    if not (ORT_PACKAGE / "package.json").is_file():
        parser.exit(2, "bard: error: no onnxruntime-web in web/node_modules; run "
                       "`make web-runtime`\n")
    with tempfile.TemporaryDirectory() as work:
        site = build_site(SiteRequest(out=Path(work) / "site", runtime=str(ORT_PACKAGE))).out
        with served(site) as url, chromium(args.chromium) as context:
            version = context.browser.version if context.browser else "unknown"
            report = measure(context, url, args.chars, args.rounds, args.threads)
            if args.screenshots is not None:
                screenshots(context, url, args.screenshots)
    report.update({
        "command": "python -m bard.bench.browser " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if v is not None and k != "chromium"),
        "chars": args.chars, "rounds": args.rounds, "prompt": PROMPT, "model": "bundled",
        "chromium": version, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(),
    })
    atomic_write_text(args.out, json.dumps(report, indent=1, allow_nan=False) + "\n")
    for name, rate in report["chars_per_s"].items():
        print(f"{name:28s} {rate:8.0f} chars/s  ({report['ratio_to_sdk_1_thread'][name]:.2f}x "
              "the SDK at 1 thread)")
    if not report["webgpu_adapter"]:
        print("WebGPU: this headless chromium offers no adapter (not measured)")


if __name__ == "__main__":
    main()
