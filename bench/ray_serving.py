"""`bard bench --serving --ray`: plain `bard serve` against Ray Serve with 1 and 2 replicas.

The same streaming HTTP clients as `bard bench --serving` (1, 8, 32 and 128 callers) hit three
servers in turn, each given the same cores: `bard serve` with one engine on all of them, and
`bard serve --ray` with one replica on all of them, then two replicas on half each (threads =
CPUs per replica, so the replicas do not oversubscribe the machine).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import bard_sdk

from .serving import (
    ServingConfig,
    ServingReport,
    http_clients,
    ms,
    start_server,
    summarise,
    write_serving,
)

PLAIN = "HTTP x bard serve"


def setups(cores: int) -> list[tuple[str, list[str]]]:
    """(mode, `bard serve` options) for the plain server and 1 and 2 Ray replicas."""
    modes = [(PLAIN, ["--threads", str(cores)])]
    for replicas in (1, 2):
        each = max(1, cores // replicas)
        modes.append((f"HTTP x Ray Serve, {replicas} replica(s) x {each} thread(s)",
                      ["--ray", "--replicas", str(replicas), "--num-cpus", f"{cores / replicas:g}",
                       "--threads", str(each)]))
    return modes


def run_ray_serving_bench(artifact: Path | None, quick: bool, out_dir: Path,
                          threads: int | None = None) -> ServingReport:
    config = ServingConfig.quick() if quick else ServingConfig()
    path = artifact or bard_sdk.bundled_model_path()
    cores = threads or len(os.sched_getaffinity(0))
    report = ServingReport(str(path), {**asdict(config), "cores": cores})
    most = max(config.callers)
    for mode, options in setups(cores):
        server, url, model_id = start_server(path, most, None, options)
        try:
            warm = replace(config, requests=1)
            asyncio.run(http_clients(url + "/v1/completions", model_id, 2, warm))
            for callers in config.callers:
                chars, seconds, first = asyncio.run(
                    http_clients(url + "/v1/completions", model_id, callers, config))
                result = summarise(mode, callers, chars, seconds, first)
                report.results.append(result)
                print(f"  {mode:>48} x{callers:<4} {result.chars_per_s:>10,.0f} chars/s  first "
                      f"char p50 {ms(result.ttfc_p50_ms)} p99 {ms(result.ttfc_p99_ms)}",
                      file=sys.stderr)
        finally:
            server.terminate()
            server.wait(timeout=60)
    for mode, _ in setups(cores)[1:]:
        for callers in config.callers:
            report.ratios[f"{mode} / bard serve @{callers}"] = (
                report.get(mode, callers).chars_per_s / report.get(PLAIN, callers).chars_per_s)
    write_serving(report, out_dir, "ray-serving.json")
    return report
