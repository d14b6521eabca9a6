"""Side by side: a 200-character request alone, beside 1 and beside 4 100,000-character
prompts, with the engine's prefill budget off (a chunk every step) and on (PREFILL_SHARE).
`python -m bard.bench.long_prompts_ab [ROUNDS]`; figures are medians over the rounds."""

from __future__ import annotations

import statistics
import sys
import time

import bard_sdk
from bard_sdk.engine import PREFILL_SHARE
from bard_sdk.scheduler import PrefillBudget


def run(model: bard_sdk.Model, prompt: str, share: float | None, longs: int
        ) -> tuple[float, float]:
    with bard_sdk.Engine(model, max_active=8) as engine:
        engine.scheduler.budget = None if share is None else PrefillBudget(share)
        engine.generate("A", 5)
        started = time.perf_counter()
        background = [engine.submit(prompt, 1) for _ in range(longs)]
        engine.submit("KING:", 200, seed=1).result()
        short_s = time.perf_counter() - started
        for request in background:
            request.result()
        return short_s, time.perf_counter() - started


def main(rounds: int) -> None:
    model = bard_sdk.load(device="cpu")
    prompt = ("ROMEO: " * 20_000)[:100_000]
    times: dict[tuple[float | None, int], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for share in (None, PREFILL_SHARE):
            for longs in (0, 1, 4):
                times.setdefault((share, longs), []).append(run(model, prompt, share, longs))
    for (share, longs), values in times.items():
        short = statistics.median(v[0] for v in values)
        read = statistics.median(v[1] for v in values)
        print(f"share={share} longs={longs} short_s={short:.3f} long_s={read:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
