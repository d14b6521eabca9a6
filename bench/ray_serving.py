"""`bard bench --serving --ray`: plain `bard serve` against Ray Serve with 1 and 2 replicas.

The same streaming HTTP clients as `bard bench --serving` (1, 8, 32 and 128 callers) hit three
servers, all running at once and measured in alternating order, each given the same cores:
`bard serve` with one engine on all of them, and `bard serve --ray` with one replica on all of
them, then two replicas on half each (threads = CPUs per replica, so the replicas do not
oversubscribe the machine).

Beside the rates it records the CPU time each part of the server spent per 1,000 characters
(replicas, Ray's HTTP proxy, the rest of Ray), read from /proc for the server's process tree:
what a request costs where, which holds on a busy machine too, unlike wall-clock rates.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import bard_sdk

from .procfs import cpu_seconds as process_cpu_seconds
from .procfs import descendants
from .server_process import ServerProcess
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
# What a process of the server's tree counts as, by the title Ray gives its workers.
ROLES = (("ray::ServeReplica", "replicas"), ("ray::ProxyActor", "HTTP proxy"))


@dataclass
class RayServingReport(ServingReport):
    # "mode @callers" -> part of the server -> CPU milliseconds per 1,000 characters served
    cpu_ms_per_kchar: dict[str, dict[str, float]] = field(default_factory=dict)
    # "mode @callers" -> the machine's 1-minute load average when that measurement ended
    load: dict[str, float] = field(default_factory=dict)


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU time (user + system) used so far by each part of the server rooted at `root`."""
    totals: dict[str, float] = {}
    for pid in [root, *descendants(root)]:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue  # it left meanwhile
        used = process_cpu_seconds(pid)
        if used is None:
            continue
        role = "bard serve" if pid == root else next(
            (name for prefix, name in ROLES if title.startswith(prefix)), "other Ray processes")
        totals[role] = totals.get(role, 0.0) + used
    return totals


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
                          threads: int | None = None) -> RayServingReport:
    config = ServingConfig.quick() if quick else ServingConfig()
    path = artifact or bard_sdk.bundled_model_path()
    cores = threads or len(os.sched_getaffinity(0))
    report = RayServingReport(str(path), {**asdict(config), "cores": cores})
    most = max(config.callers)
    servers: list[tuple[str, ServerProcess, str, str]] = []
    try:
        for mode, options in setups(cores):  # all up at once: each comparison is made
            server = start_server(path, most, None, options)  # side by side
            servers.append((mode, server, server.url, server.model))
        for _, _, url, model_id in servers:
            asyncio.run(http_clients(url + "/v1/completions", model_id, 2,
                                     replace(config, requests=1)))  # warm-up
        for turn, callers in enumerate(config.callers):
            # ABC, then CBA: a machine whose load drifts favours no server
            for mode, server, url, model_id in servers[:: 1 if turn % 2 == 0 else -1]:
                before = cpu_seconds(server.pid)
                chars, seconds, first = asyncio.run(
                    http_clients(url + "/v1/completions", model_id, callers, config))
                after = cpu_seconds(server.pid)
                result = summarise(mode, callers, chars, seconds, first)
                report.results.append(result)
                key = f"{mode} @{callers}"
                report.cpu_ms_per_kchar[key] = {
                    role: 1e6 * (after[role] - before.get(role, 0.0)) / chars
                    for role in sorted(after)}
                report.load[key] = os.getloadavg()[0]
                print(f"  {mode:>48} x{callers:<4} {result.chars_per_s:>10,.0f} chars/s  first "
                      f"char p50 {ms(result.ttfc_p50_ms)} p99 {ms(result.ttfc_p99_ms)}  load "
                      f"{report.load[key]:.1f}", file=sys.stderr)
    finally:
        for _, server, _, _ in servers:
            server.process.terminate()
        for _, server, _, _ in servers:
            server.stop()
    report.results.sort(key=lambda r: ([m for m, _ in setups(cores)].index(r.mode), r.callers))
    for mode, _ in setups(cores)[1:]:
        for callers in config.callers:
            report.ratios[f"{mode} / bard serve @{callers}"] = (
                report.get(mode, callers).chars_per_s / report.get(PLAIN, callers).chars_per_s)
    write_serving(report, out_dir, "ray-serving.json")
    print(cpu_table(report))
    return report


def cpu_table(report: RayServingReport) -> str:
    roles = sorted({role for parts in report.cpu_ms_per_kchar.values() for role in parts})
    lines = ["", "CPU milliseconds per 1,000 characters served:", "",
             "| mode | " + " | ".join(roles) + " | total |",
             "| --- |" + " --- |" * (len(roles) + 1)]
    for key, parts in report.cpu_ms_per_kchar.items():
        cells = [f"{parts[r]:.1f}" if r in parts else "-" for r in roles]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {sum(parts.values()):.1f} |")
    return "\n".join(lines)
