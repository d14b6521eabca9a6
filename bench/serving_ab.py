"""`/v1/completions` at C streaming callers: this checkout's `bard serve` against another
checkout's, side by side, alternating rounds (AB, BA, ...), as ratios of medians.

    python -m bard.bench.serving_ab --before /tmp/main --callers 32 --rounds 5

`--before` is a source checkout (a `git archive` of main will do): its code is run by this
interpreter through a package tree of links built in a temporary folder (the dependencies are
this environment's). A third server mode, this checkout with `--extra` request fields (JSON),
measures what those fields cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from .procfs import cpu_seconds
from .server_process import start_server as start
from .server_process import stop_server
from .serving import ServingConfig, run_http_clients

ROOMS = {"training": "training", "export": "export", "bench": "bench", "serve": "serve",
         "web": "web"}


def package_tree(checkout: Path, into: Path) -> Path:
    """`bard` and `bard_sdk` of `checkout` as importable packages (links to its rooms)."""
    bard = into / "bard"
    bard.mkdir()
    for item in (checkout / "bard").iterdir():
        (bard / item.name).symlink_to(item)
    for package, room in ROOMS.items():
        (bard / package).symlink_to(checkout / room)
    sdk = into / "bard_sdk"
    sdk.mkdir()
    for item in (checkout / "sdk").iterdir():
        (sdk / item.name).symlink_to(item)
    (sdk / "artifacts").symlink_to(checkout / "artifacts")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--extra", default=None, help="request fields (JSON) for a 3rd mode")
    args = parser.parse_args()
    config = ServingConfig(callers=(args.callers,))
    with tempfile.TemporaryDirectory() as tmp:
        tree = package_tree(args.before.resolve(), Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        options = ["--device", "cpu", "--max-active", "128", "--max-queued", "4096"]
        servers = {"before": start(*options, env=env, cwd=Path(tmp), timeout=600),
                   "after": start(*options, timeout=600)}
        modes = {"before": ("before", config), "after": ("after", config)}
        if args.extra:
            modes["after+extra"] = ("after", ServingConfig(callers=(args.callers,),
                                                           body_extra=json.loads(args.extra)))
        rates: dict[str, list[float]] = {m: [] for m in modes}
        # The server's CPU per 1000 characters: less sensitive than the rate to a loaded
        # machine (other processes take wall time, not this process's CPU time).
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        try:
            for r in range(args.rounds):
                order = list(modes) if r % 2 == 0 else list(modes)[::-1]
                for mode in order:
                    server, cfg = modes[mode]
                    running = servers[server]
                    used = cpu_seconds(running.pid) or 0.0
                    chars, seconds, _, _ = run_http_clients(
                        running.url + "/v1/completions", running.model, args.callers, cfg)
                    rates[mode].append(chars / seconds)
                    cpu[mode].append(((cpu_seconds(running.pid) or 0.0) - used) / chars * 1e6)
                print(json.dumps({m: [round(v[-1]), round(cpu[m][-1], 1)]
                                  for m, v in rates.items()}, allow_nan=False), flush=True)
        finally:
            for running in servers.values():
                stop_server(running.process)
    medians = {m: statistics.median(v) for m, v in rates.items()}
    paired = [a / b for a, b in zip(rates["after"], rates["before"])]
    cpu_medians = {m: statistics.median(v) for m, v in cpu.items()}
    report = {"callers": args.callers, "rounds": rates, "cpu_rounds": cpu,
              "median_chars_per_s": medians,
              "after_over_before": medians["after"] / medians["before"],
              "median_round_ratio": statistics.median(paired),
              "server_cpu_ms_per_kchar": cpu_medians,
              "cpu_after_over_before": cpu_medians["after"] / cpu_medians["before"]}
    if "after+extra" in medians:
        report["extra_over_after"] = medians["after+extra"] / medians["after"]
        report["median_round_ratio_extra"] = statistics.median(
            [e / a for e, a in zip(rates["after+extra"], rates["after"])])
        report["cpu_extra_over_after"] = cpu_medians["after+extra"] / cpu_medians["after"]
    print(json.dumps(report, allow_nan=False), file=sys.stdout)


if __name__ == "__main__":
    main()
