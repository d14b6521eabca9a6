"""`bard bench --serving`: many concurrent callers, each with one prompt, in four ways.

For 1, 8, 32 and 128 callers, each making `requests` requests of `new_chars` characters:

- `batched generate` (the ceiling): one `Model.generate` call with every caller's prompt;
- `threads x Model.stream`: one thread per caller, each running its own batch-1 loop;
- `threads x Engine.stream`: one thread per caller on one continuously batched engine;
- `HTTP x bard serve`: asyncio clients streaming from a `bard serve` subprocess.

Aggregate chars/s, the p50/p99 time to first character per request, and CPU time per 1,000
characters (this process's; for HTTP the server's plus the clients', which run in a niced child
process so that the server gets the cores first, as it would with remote callers), all in one
run. On a shared host the
CPU per character is the steadier figure: it does not depend on the share of cores a run got.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bard_sdk

from .long_prompts import long_prompt_ratios
from .procfs import cpu_seconds
from .server_process import ServerProcess
from .server_process import start_server as start

TEMPERATURE = 0.8


@dataclass(frozen=True)
class ServingConfig:
    callers: tuple[int, ...] = (1, 8, 32, 128)
    requests: int = 3
    new_chars: int = 200
    rounds: int = 3
    body_extra: dict[str, Any] = field(default_factory=dict)  # more request fields

    @classmethod
    def quick(cls) -> ServingConfig:
        return cls(callers=(1, 4), requests=1, new_chars=20, rounds=2)


@dataclass
class ServingResult:
    mode: str
    callers: int
    chars_per_s: float
    ttfc_p50_ms: float | None  # None for the batched ceiling: no caller waits alone
    ttfc_p99_ms: float | None
    cpu_ms_per_kchar: float | None = None  # every process involved: bench (+ server)
    server_cpu_ms_per_kchar: float | None = None  # HTTP only: the `bard serve` process


@dataclass
class ServingReport:
    model: str
    config: dict[str, Any]
    results: list[ServingResult] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)

    def get(self, mode: str, callers: int) -> ServingResult:
        return next(r for r in self.results if (r.mode, r.callers) == (mode, callers))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(mode: str, callers: int, chars: int, seconds: float,
              first_chars: list[float], cpu_s: float | None = None,
              server_cpu_s: float | None = None) -> ServingResult:
    ms = [t * 1e3 for t in first_chars]
    per_kchar = 1e6 / max(chars, 1)
    return ServingResult(mode, callers, chars / seconds, percentile(ms, 0.5) if ms else None,
                         percentile(ms, 0.99) if ms else None,
                         None if cpu_s is None else cpu_s * per_kchar,
                         None if server_cpu_s is None else server_cpu_s * per_kchar)


class CpuMeter:
    """CPU seconds this process and, optionally, a server process used inside a `with`."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.own = 0.0
        self.server: float | None = None

    def __enter__(self) -> CpuMeter:
        self._own = time.process_time()
        self._server = None if self.server_pid is None else cpu_seconds(self.server_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.own = time.process_time() - self._own
        if self.server_pid is not None and self._server is not None:
            end = cpu_seconds(self.server_pid)
            self.server = None if end is None else end - self._server

    @property
    def total(self) -> float:
        return self.own + (self.server or 0.0)


def seeds_of(caller: int, config: ServingConfig) -> list[int]:
    return [caller * config.requests + r for r in range(config.requests)]


def run_threads(callers: int, config: ServingConfig,
                stream: Callable[[int], Any]) -> tuple[int, float, list[float]]:
    """Each caller thread streams its requests one after another; returns chars, seconds and
    every request's time to first character."""
    first: list[float] = []
    produced = [0] * callers
    lock = threading.Lock()

    def caller(index: int) -> None:
        for seed in seeds_of(index, config):
            start = time.perf_counter()
            pieces = iter(stream(seed))
            head = next(pieces, "")
            seen = time.perf_counter() - start
            produced[index] += len(head) + sum(len(p) for p in pieces)
            with lock:
                first.append(seen)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(produced), time.perf_counter() - start, first


def ceiling(model: bard_sdk.Model, callers: int, config: ServingConfig) -> ServingResult:
    with CpuMeter() as cpu:
        start = time.perf_counter()
        for r in range(config.requests):
            model.generate([""] * callers, config.new_chars, temperature=TEMPERATURE,
                           seed=[c * config.requests + r for c in range(callers)])
        seconds = time.perf_counter() - start
    return summarise("batched generate", callers, callers * config.requests * config.new_chars,
                     seconds, [], cpu.total)


async def http_clients(url: str, model_id: str, callers: int,
                       config: ServingConfig) -> tuple[int, float, list[float]]:
    import httpx

    first: list[float] = []
    produced = 0

    async def one(client: httpx.AsyncClient, seed: int) -> None:
        nonlocal produced
        body = {"model": model_id, "prompt": "", "max_tokens": config.new_chars,
                "temperature": TEMPERATURE, "seed": seed, "stream": True,
                **config.body_extra}
        start = time.perf_counter()
        seen = False
        async with client.stream("POST", url, json=body) as reply:
            reply.raise_for_status()
            async for line in reply.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                text = json.loads(line[6:])["choices"][0]["text"]
                if text and not seen:
                    first.append(time.perf_counter() - start)
                    seen = True
                produced += len(text)

    async def caller(client: httpx.AsyncClient, index: int) -> None:
        for seed in seeds_of(index, config):
            await one(client, seed)

    limits = httpx.Limits(max_connections=callers + 8, max_keepalive_connections=callers + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(caller(client, i) for i in range(callers)))
        return produced, time.perf_counter() - start, first


# The HTTP clients run in a child process at this niceness: on a small machine they stand for
# callers on other machines, so the server gets the cores first and the rate measured is the
# server's; the CPU they use is still counted (cpu_ms_per_kchar).
CLIENT_NICENESS = 10
CLIENT_SCRIPT = """
import asyncio, json, os, sys
from bard.bench.serving import ServingConfig, http_clients
url, model_id, callers, config, nice = json.loads(sys.argv[1])
os.nice(nice)
config = ServingConfig(**{**config, "callers": tuple(config["callers"])})
import time
start = time.process_time()
chars, seconds, first = asyncio.run(http_clients(url, model_id, callers, config))
print(json.dumps([chars, seconds, first, time.process_time() - start], allow_nan=False))
"""


def run_http_clients(url: str, model_id: str, callers: int, config: ServingConfig,
                     niceness: int = CLIENT_NICENESS) -> tuple[int, float, list[float], float]:
    """`http_clients` in a niced child process: chars, seconds, first-char times, and the CPU
    seconds the clients used (measured in the child around the clients alone, not its
    start-up)."""
    args = json.dumps([url, model_id, callers, asdict(config), niceness], allow_nan=False)
    done = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, args], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"HTTP clients failed: {done.stderr.strip()[-2000:]}")
    chars, seconds, first, cpu = json.loads(done.stdout.strip().splitlines()[-1])
    return int(chars), float(seconds), [float(t) for t in first], float(cpu)


def start_server(artifact: Path, max_active: int, threads: int | None,
                 extra: Sequence[str] = ()) -> ServerProcess:
    """A `bard serve` subprocess (`extra`: more options, e.g. --ray), by the shared helper."""
    options = ["--device", "cpu", "--max-active", str(max_active), "--max-queued", "4096",
               *extra, *(["--threads", str(threads)] if threads else [])]
    return start(*options, artifact=artifact, timeout=600)


def run_serving_bench(artifact: Path | None, quick: bool, out_dir: Path,
                      threads: int | None = None) -> ServingReport:
    """Every mode at every caller count, in `rounds` rounds whose order alternates (ABCD, then
    DCBA, ...), so a slow spell of a shared host falls on every mode alike; each mode's
    figure is its median round. `Model.stream` threads, the baseline that does not batch,
    run once."""
    config = ServingConfig.quick() if quick else ServingConfig()
    path = artifact or bard_sdk.bundled_model_path()
    model = bard_sdk.load(path, device="cpu", threads=threads)
    report = ServingReport(str(path), asdict(config))
    most = max(config.callers)
    engine = bard_sdk.Engine(model, max_active=most, max_queued=4 * most)
    server = start_server(path, most, threads)
    url, model_id = server.url, server.model
    options = dict(temperature=TEMPERATURE)

    def measure(mode: str, callers: int) -> ServingResult:
        if mode == "batched generate":
            return ceiling(model, callers, config)
        client_cpu = 0.0  # HTTP: the client process's
        with CpuMeter(server.pid if mode == "HTTP x bard serve" else None) as cpu:
            if mode == "threads x Model.stream":
                chars, seconds, first = run_threads(
                    callers, config,
                    lambda seed: model.stream("", config.new_chars, seed=seed, **options))
            elif mode == "threads x Engine.stream":
                chars, seconds, first = run_threads(
                    callers, config,
                    lambda seed: engine.stream("", config.new_chars, seed=seed, **options))
            else:
                try:
                    chars, seconds, first, client_cpu = run_http_clients(
                        url + "/v1/completions", model_id, callers, config)
                except Exception as err:
                    raise server.failure(err) from err
        return summarise(mode, callers, chars, seconds, first, cpu.total + client_cpu,
                         cpu.server)

    try:
        model.generate("", 20)  # warm-up
        for callers in config.callers:
            rounds: dict[str, list[ServingResult]] = {mode: [] for mode in MODES}
            for r in range(config.rounds):
                order = MODES if r % 2 == 0 else MODES[::-1]
                for mode in order:
                    if mode == "threads x Model.stream" and r > 0:
                        continue
                    rounds[mode].append(measure(mode, callers))
            for mode in MODES:
                result = median_round(rounds[mode])
                report.results.append(result)
                print(f"  {result.mode:>24} x{callers:<4} {result.chars_per_s:>10,.0f} chars/s"
                      f"  first char p50 {ms(result.ttfc_p50_ms)} p99 {ms(result.ttfc_p99_ms)}"
                      f"  CPU {cpu_ms(result.cpu_ms_per_kchar)} ms/kchar"
                      f"  (rounds: {', '.join(f'{x.chars_per_s:,.0f}' for x in rounds[mode])})",
                      file=sys.stderr)
    finally:
        engine.close()
        server.stop()
    for callers in config.callers:
        top = report.get("batched generate", callers).chars_per_s
        for mode in MODES[1:]:
            report.ratios[f"{mode} / batched @{callers}"] = (
                report.get(mode, callers).chars_per_s / top)
        http, batched = report.get("HTTP x bard serve", callers), report.get("batched generate",
                                                                               callers)
        if http.server_cpu_ms_per_kchar and batched.cpu_ms_per_kchar:
            # chars per CPU-second of the server against the ceiling's: what HTTP would reach
            # on cores of its own (clients elsewhere)
            report.ratios[f"HTTP server capacity (CPU per char) / batched @{callers}"] = (
                batched.cpu_ms_per_kchar / http.server_cpu_ms_per_kchar)
    print("  long prompts beside a short request (engine)", file=sys.stderr)
    report.ratios.update(long_prompt_ratios(model, quick))
    write_serving(report, out_dir)
    return report


MODES = ("batched generate", "threads x Model.stream", "threads x Engine.stream",
         "HTTP x bard serve")


def median_round(results: list[ServingResult]) -> ServingResult:
    """The round with the median rate (the lower middle one for an even count)."""
    ordered = sorted(results, key=lambda r: r.chars_per_s)
    return ordered[(len(ordered) - 1) // 2]


def write_serving(report: ServingReport, out_dir: Path, name: str = "serving.json") -> None:
    from bard.training.fsutil import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / name,
                      json.dumps(asdict(report), indent=1, allow_nan=False) + "\n")
    print(serving_table(report))


def serving_table(report: ServingReport) -> str:
    lines = [f"model: {report.model}", "",
             "| mode | callers | chars/s | first char p50 | first char p99 "
             "| CPU ms / 1,000 chars (server's) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in report.results:
        server = "" if r.server_cpu_ms_per_kchar is None else \
            f" ({cpu_ms(r.server_cpu_ms_per_kchar)})"
        lines.append(f"| {r.mode} | {r.callers} | {r.chars_per_s:,.0f} | {ms(r.ttfc_p50_ms)} "
                     f"| {ms(r.ttfc_p99_ms)} | {cpu_ms(r.cpu_ms_per_kchar)}{server} |")
    lines += ["", "| ratio | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.2f}x |" for name, value in report.ratios.items()]
    return "\n".join(lines)


def cpu_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"
