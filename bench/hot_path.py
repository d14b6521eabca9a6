"""`python -m bard.bench.hot_path --before DIR`: the SDK's per-character loop against an older
SDK, side by side in one run, and the cost of beam search per character (BENCHMARKS.md, "The
public API: hot path before and after, beam search").

DIR is the `sdk/` folder of another checkout (e.g. `git worktree add /tmp/before <commit>`).
Each SDK runs in its own child process (so both can be imported as `bard_sdk`) on the same
artifact; the children alternate (before, after, after, before, ...) and each case's figure is
its median round, so a slow spell of a shared host falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bard_sdk
from bard.training.fsutil import atomic_write_text

# Run in a child: load the artifact with the SDK found first on sys.path, then time each case.
CHILD = r"""
import json, sys, time
import bard_sdk
model = bard_sdk.load(sys.argv[1], device="cpu")
cases = json.loads(sys.argv[2])
model.generate("ROMEO:", 50)  # warm-up
out = {}
for name, batch, chars, options in cases:
    prompts = ["ROMEO:"] * batch
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        model.generate(prompts, chars, **options)
        best = min(best, time.perf_counter() - start)
    out[name] = batch * chars / best
print(json.dumps(out, allow_nan=False))
"""

HOT_CASES = [("greedy, batch 1", 1, 400, {"temperature": 0}),
             ("sampled, batch 1", 1, 400, {"temperature": 0.8, "seed": 1}),
             ("sampled, batch 8", 8, 200, {"temperature": 0.8, "seed": 1}),
             ("sampled, batch 64", 64, 100, {"temperature": 0.8, "seed": 1})]
BEAM_CASES = [(f"beams {k}, batch 1", 1, 200, {"num_beams": k} if k > 1 else {"temperature": 0})
              for k in (1, 2, 4, 8)]


def run_child(sdk_dir: Path | None, artifact: Path, cases: list) -> dict[str, float]:  # type: ignore[type-arg]
    """chars/s per case, with the SDK in `sdk_dir` (None: the installed one)."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as shim:
        if sdk_dir is not None:
            (Path(shim) / "bard_sdk").symlink_to(sdk_dir.resolve())
            env["PYTHONPATH"] = shim + os.pathsep + env.get("PYTHONPATH", "")
        command = [sys.executable, "-c", CHILD, str(artifact),
                   json.dumps(cases, allow_nan=False)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="an older checkout's sdk/")
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: bundled)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results") / "hot_path.json")
    args = parser.parse_args()
    artifact = args.model or bard_sdk.bundled_model_path()
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for side in order:
            sdk = args.before if side == "before" else None
            runs[side].append(run_child(sdk, artifact, HOT_CASES))
            print(f"round {r + 1} {side}: {runs[side][-1]}", file=sys.stderr)
    beams = run_child(None, artifact, BEAM_CASES)
    table = {name: {side: statistics.median(run[name] for run in runs[side])
                    for side in runs} for name, *_ in HOT_CASES}
    report = {"artifact": str(artifact), "before": str(args.before), "rounds": args.rounds,
              "hot_path_chars_per_s": table, "beam_chars_per_s": beams}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1, allow_nan=False) + "\n")
    print("| case | before chars/s | after chars/s | after / before |")
    print("| --- | --- | --- | --- |")
    for name, row in table.items():
        print(f"| {name} | {row['before']:,.0f} | {row['after']:,.0f} | "
              f"{row['after'] / row['before']:.2f}x |")
    greedy = beams["beams 1, batch 1"]
    print("\n| beams | chars/s | time per character vs greedy |")
    print("| --- | --- | --- |")
    for name, value in beams.items():
        print(f"| {name} | {value:,.0f} | {greedy / value:.2f}x |")


if __name__ == "__main__":
    main()
