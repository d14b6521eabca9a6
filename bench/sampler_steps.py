"""`python -m bard.bench.sampler_steps --model ART --before DIR`: the sampler's own time per
decode step, this SDK's `sample` against an older one's, side by side in one process
(BENCHMARKS.md, "Large vocabularies", third pass).

A batch of rows generates; before each timed call a model step runs (its output unused), so
the caches are as cold as inside generation, where the sampler's passes run about twice as
slow as on a warm array; the variants alternate their order every step; each figure is the
median over the steps. DIR is the `sdk/` folder of another checkout, imported beside this one
under another name.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import bard_sdk
import numpy as np
from bard_sdk.generation import prefill
from bard_sdk.sampling import SamplingParams, row_keys, sample, uniforms

CASES = {"temperature 0.8": (0.8, None, None), "top_k 50": (0.8, 50, None),
         "top_p 0.9": (0.8, None, 0.9), "temperature 1.0, top_p 0.95": (1.0, None, 0.95)}


def older_sdk(directory: Path) -> ModuleType:
    """The `sdk/` folder at `directory` imported as the package `bard_sdk_before`."""
    spec = importlib.util.spec_from_file_location(
        "bard_sdk_before", directory / "__init__.py", submodule_search_locations=[str(directory)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"no SDK package at {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bard_sdk_before"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("bard_sdk_before.sampling")


def per_step(model: Any, old: ModuleType, case: tuple[float, int | None, float | None],
             rows: int, steps: int) -> dict[str, float]:
    """Median microseconds per `sample` call of each SDK over `steps` decode steps."""
    runner = model.runner
    batch = prefill(runner, [model.encode(model.vocab.chars[0])] * rows,
                    runner.state(*model.zero_state(rows)))
    state, logits = batch.state, batch.logits
    calls = {"before": lambda z, u: old.sample(z, old.SamplingParams(*case), u),
             "after": lambda z, u: sample(z, SamplingParams(*case), u)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    keys, idle = row_keys(list(range(rows))), np.zeros((rows, 1), dtype=np.int64)
    for step in range(steps):
        u = uniforms(keys, np.full(rows, step))
        z = np.ascontiguousarray(logits)
        for name in (calls if step % 2 == 0 else list(calls)[::-1]):
            runner.step(idle, state)  # as in generation: a model step before the sampler
            start = time.perf_counter()
            calls[name](z, u)
            times[name].append(time.perf_counter() - start)
        logits, state = runner.step(sample(z, SamplingParams(*case), u)[:, None], state)
        logits = logits[:, -1]
    return {name: float(np.median(values)) * 1e6 for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an artifact")
    parser.add_argument("--before", type=Path, required=True, help="an older checkout's sdk/")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = bard_sdk.load(args.model, device="cpu", threads=args.threads)
    old = older_sdk(args.before.resolve())
    report = {name: per_step(model, old, case, args.rows, args.steps)
              for name, case in CASES.items()}
    print("| sampling | before | after | after / before |")
    print("| --- | --- | --- | --- |")
    for name, row in report.items():
        print(f"| {name} | {row['before']:,.0f} us | {row['after']:,.0f} us | "
              f"{row['after'] / row['before']:.2f} |")
    print(json.dumps({"command": " ".join(["python -m bard.bench.sampler_steps", *sys.argv[1:]]),
                      "microseconds_per_step": report}, allow_nan=False))


if __name__ == "__main__":
    main()
