"""`python -m bard.bench.logprobs_cost`: what `logprobs` costs on /v1/completions, and that the
path without it is as fast as before (BENCHMARKS.md, "Logprobs").

One `bard serve` of this checkout (and, with `--before BARD`, one of an older checkout's
`bard`, e.g. /work/main/.venv/bin/bard) on the shipped model; for each number of callers, each
caller makes `--requests` non-streamed requests of `--chars` characters, without logprobs and
with `logprobs=5` (and echo off), the modes alternating in order round by round; each figure is
the median round's chars/s and the server's CPU milliseconds per 1,000 characters (steadier on a
shared host). The clients run in this process at a lower priority than the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bard.training.fsutil import atomic_write_text

from .procfs import cpu_seconds
from .server_process import ServerProcess, start_server, stop_server


async def clients(url: str, model_id: str, callers: int, requests: int, chars: int,
                  logprobs: int | None) -> tuple[int, float]:
    """Characters made and seconds taken by `callers` concurrent callers."""
    import httpx

    made = 0

    async def caller(client: httpx.AsyncClient, index: int) -> None:
        nonlocal made
        for k in range(requests):
            body: dict[str, Any] = {"model": model_id, "prompt": "ROMEO:", "max_tokens": chars,
                                    "temperature": 0.8, "seed": index * 1000 + k}
            if logprobs is not None:
                body["logprobs"] = logprobs
            reply = await client.post(url, json=body)
            reply.raise_for_status()
            made += len(reply.json()["choices"][0]["text"])

    limits = httpx.Limits(max_connections=callers + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(caller(client, i) for i in range(callers)))
        return made, time.perf_counter() - start


def measure(server: ServerProcess, callers: int, requests: int, chars: int,
            logprobs: int | None) -> tuple[float, float | None]:
    """(chars/s, server CPU ms per 1,000 characters) of one round."""
    before = cpu_seconds(server.pid)
    made, seconds = asyncio.run(clients(server.url + "/v1/completions", server.model, callers,
                                        requests, chars, logprobs))
    after = cpu_seconds(server.pid)
    cpu = None if before is None or after is None else (after - before) * 1e6 / made
    return made / seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=None,
                        help="an older checkout's `bard` program, for the path without logprobs")
    parser.add_argument("--callers", default="1,8,32")
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--chars", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results") / "logprobs.json")
    args = parser.parse_args()
    servers = {"this": start_server("--device", "cpu", "--max-active", "64")}
    if args.before is not None:
        servers["before"] = start_server("--device", "cpu", "--max-active", "64",
                                         program=[str(args.before)])
    modes = [("this", None), ("this", 5)] + ([("before", None)] if args.before else [])
    os.nice(10)  # the callers stand for remote ones: the servers get the cores first
    for name, logprobs in modes:  # warm-up: first requests pay for imports and allocations
        measure(servers[name], 4, 1, 50, logprobs)
    figures: dict[str, list[tuple[float, float | None]]] = {}
    try:
        for turn in range(args.rounds):
            for callers in map(int, args.callers.split(",")):
                order = modes if turn % 2 == 0 else modes[::-1]
                for name, logprobs in order:
                    key = f"{name} logprobs={logprobs} @{callers}"
                    figures.setdefault(key, []).append(measure(
                        servers[name], callers, args.requests, args.chars, logprobs))
    finally:
        for server in servers.values():
            stop_server(server.process)
    summary = {}
    for key, rounds in figures.items():
        rate = statistics.median(r for r, _ in rounds)
        cpus = [c for _, c in rounds if c is not None]
        summary[key] = {"chars_per_s": rate,
                        "server_cpu_ms_per_kchar": statistics.median(cpus) if cpus else None}
        print(f"{key:>32}: {rate:>8,.0f} chars/s  server CPU "
              f"{summary[key]['server_cpu_ms_per_kchar'] or float('nan'):.1f} ms/kchar")
    for callers in map(int, args.callers.split(",")):
        plain = summary[f"this logprobs=None @{callers}"]["chars_per_s"]
        print(f"@{callers}: logprobs=5 / without = "
              f"{summary[f'this logprobs=5 @{callers}']['chars_per_s'] / plain:.2f}", end="")
        if args.before is not None:
            print(f"; without: this / before = "
                  f"{plain / summary[f'before logprobs=None @{callers}']['chars_per_s']:.2f}",
                  end="")
        print()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"args": vars(args) | {
        "before": None if args.before is None else str(args.before), "out": str(args.out)},
        "summary": summary}, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
