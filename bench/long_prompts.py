"""The "long prompts" row of `bard bench --serving`: does reading long prompts stall the rows
that generate, and do the prompts still get read while rows generate?

In the engine (the shipped model's, `max_active=8`), one round is:

- alone: a few 200-character requests one after another, nothing else in the engine;
- 1 prompt alone: one 100,000-character prompt, nothing else (its read rate is the yardstick);
- beside 1 / beside 4: one or four such prompts submitted, then 200-character requests one
  after another, back to back, until every long prompt is read. Each request's time is a
  sample; the prompts' read time is then measured with rows generating all along.

Rounds alternate the order of the cases; figures are medians, reported as ratios. Targets
(issue 21): the 200-character request within 3x its time alone; the long prompts read at
>= 1/3 of one prompt's rate alone (one prompt; four together).

`python -m bard.bench.long_prompts [ROUNDS] [CHARS] [--budget on|off|both]` prints the same.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import bard_sdk
from bard_sdk.engine import PREFILL_SHARE
from bard_sdk.scheduler import PrefillBudget

SHORT_CHARS = 200
ALONE_SAMPLES = 5
BudgetFactory = Callable[[int], PrefillBudget | None]


def default_budget(max_width: int) -> PrefillBudget | None:
    return PrefillBudget(PREFILL_SHARE, max_width)


def no_budget(max_width: int) -> PrefillBudget | None:
    return None


@dataclass
class Samples:
    """Seconds per case: the short requests' times and the long prompts' read times."""

    short: dict[int, list[float]] = field(default_factory=dict)
    first_short: dict[int, list[float]] = field(default_factory=dict)
    read: dict[int, list[float]] = field(default_factory=dict)


def engine_with(model: bard_sdk.Model, budget: BudgetFactory) -> bard_sdk.Engine:
    engine = bard_sdk.Engine(model, max_active=8)
    engine.scheduler.budget = budget(engine.prefill_chunk)
    engine.generate("A", 5)  # warm-up
    return engine


def short_request(engine: bard_sdk.Engine) -> float:
    started = time.perf_counter()
    engine.submit("KING:", SHORT_CHARS, seed=1).result()
    return time.perf_counter() - started


def beside(model: bard_sdk.Model, prompt: str, longs: int, budget: BudgetFactory
           ) -> tuple[list[float], float]:
    """Short requests back to back while `longs` prompts are read: (their seconds, the read
    seconds). longs=0: ALONE_SAMPLES short requests alone, read seconds 0."""
    with engine_with(model, budget) as engine:
        started = time.perf_counter()
        background = [engine.submit(prompt, 1) for _ in range(longs)]
        read_s = [0.0]

        def wait_read() -> None:
            for request in background:
                request.result()
            read_s[0] = time.perf_counter() - started

        waiter = threading.Thread(target=wait_read)
        waiter.start()
        shorts = [short_request(engine)]
        while waiter.is_alive() or len(shorts) < (ALONE_SAMPLES if longs == 0 else 1):
            shorts.append(short_request(engine))
        waiter.join()
        return shorts, read_s[0]


def read_alone(model: bard_sdk.Model, prompt: str, budget: BudgetFactory) -> float:
    with engine_with(model, budget) as engine:
        started = time.perf_counter()
        engine.submit(prompt, 1).result()
        return time.perf_counter() - started


def measure(model: bard_sdk.Model, chars: int, rounds: int,
            budget: BudgetFactory = default_budget) -> Samples:
    prompt = ("ROMEO: " * (chars // 7 + 1))[:chars]
    samples = Samples()
    for r in range(rounds):
        for case in (0, -1, 1, 4) if r % 2 == 0 else (4, 1, -1, 0):
            if case == -1:  # one prompt alone
                samples.read.setdefault(-1, []).append(read_alone(model, prompt, budget))
                continue
            shorts, read_s = beside(model, prompt, case, budget)
            samples.short.setdefault(case, []).extend(shorts)
            samples.first_short.setdefault(case, []).append(shorts[0])
            if case:
                samples.read.setdefault(case, []).append(read_s)
    return samples


def ratios(samples: Samples, chars: int) -> dict[str, float]:
    median = statistics.median
    alone = median(samples.short[0])
    one_alone_rate = chars / median(samples.read[-1])
    return {
        "long prompts: 200-char request beside 1 long prompt / alone":
            median(samples.short[1]) / alone,
        "long prompts: 200-char request beside 4 long prompts / alone":
            median(samples.short[4]) / alone,
        "long prompts: first 200-char request beside 4 long prompts / alone":
            median(samples.first_short[4]) / alone,
        "long prompts: 1 prompt's read rate beside requests / alone":
            chars / median(samples.read[1]) / one_alone_rate,
        "long prompts: 4 prompts' read rate beside requests / 1 alone":
            4 * chars / median(samples.read[4]) / one_alone_rate,
    }


def long_prompt_ratios(model: bard_sdk.Model, quick: bool) -> dict[str, float]:
    chars = 10_000 if quick else 100_000
    return ratios(measure(model, chars, 1 if quick else 3), chars)


def describe(samples: Samples) -> str:
    median = statistics.median
    lines = [f"  200-char request alone: {median(samples.short[0]):.3f} s "
             f"(n={len(samples.short[0])})"]
    for longs in (1, 4):
        lines.append(f"  beside {longs}: request {median(samples.short[longs]):.3f} s "
                     f"(n={len(samples.short[longs])}, worst {max(samples.short[longs]):.3f}, "
                     f"first {median(samples.first_short[longs]):.3f}); "
                     f"read {median(samples.read[longs]):.1f} s")
    lines.append(f"  1 prompt read alone: {median(samples.read[-1]):.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=3)
    parser.add_argument("chars", nargs="?", type=int, default=100_000)
    parser.add_argument("--budget", choices=("on", "off", "both"), default="on")
    args = parser.parse_args()
    model = bard_sdk.load(device="cpu")
    budgets = {"on": default_budget, "off": no_budget}
    names = ("off", "on") if args.budget == "both" else (args.budget,)
    for name in names:
        samples = measure(model, args.chars, args.rounds, budgets[name])
        print(f"prefill budget {name} (share {PREFILL_SHARE}), {args.rounds} rounds, "
              f"{args.chars:,}-char prompts")
        print(describe(samples))
        for label, value in ratios(samples, args.chars).items():
            print(f"  {label}: {value:.2f}")


if __name__ == "__main__":
    main()
