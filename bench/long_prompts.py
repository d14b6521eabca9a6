"""The "long prompts" row of `bard bench --serving`: does reading long prompts stall the rows
that generate? A 200-character request alone, beside one and beside four 100,000-character
prompts, in the engine, rounds alternating; figures are medians, reported as ratios.

Targets (issue 21): the short request within 3x its time alone; the long prompts read at
>= 1/3 of one prompt's rate alone.
"""

from __future__ import annotations

import statistics
import time

import bard_sdk

SHORT_CHARS = 200


def one_round(model: bard_sdk.Model, prompt: str, longs: int) -> tuple[float, float]:
    """(seconds of the short request, seconds until every long prompt was read)."""
    with bard_sdk.Engine(model, max_active=8) as engine:
        engine.generate("A", 5)  # warm-up
        started = time.perf_counter()
        background = [engine.submit(prompt, 1) for _ in range(longs)]
        engine.submit("KING:", SHORT_CHARS, seed=1).result()
        short_s = time.perf_counter() - started
        for request in background:
            request.result()
        return short_s, time.perf_counter() - started


def long_prompt_ratios(model: bard_sdk.Model, quick: bool) -> dict[str, float]:
    chars = 10_000 if quick else 100_000
    prompt = ("ROMEO: " * (chars // 7 + 1))[:chars]
    rounds = 1 if quick else 3
    times: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 4: []}
    for r in range(rounds):
        for longs in (0, 1, 4) if r % 2 == 0 else (4, 1, 0):
            times[longs].append(one_round(model, prompt, longs))

    def median(longs: int, which: int) -> float:
        return statistics.median(t[which] for t in times[longs])

    alone = median(0, 0)
    one_alone_rate = chars / one_round_prefill_s(model, prompt)
    return {
        "long prompts: 200-char request beside 1 long prompt / alone": median(1, 0) / alone,
        "long prompts: 200-char request beside 4 long prompts / alone": median(4, 0) / alone,
        "long prompts: 1 prompt's read rate beside a request / alone":
            chars / median(1, 1) / one_alone_rate,
        "long prompts: 4 prompts' read rate beside a request / 1 alone":
            4 * chars / median(4, 1) / one_alone_rate,
    }


def one_round_prefill_s(model: bard_sdk.Model, prompt: str) -> float:
    with bard_sdk.Engine(model, max_active=8) as engine:
        engine.generate("A", 5)
        started = time.perf_counter()
        engine.submit(prompt, 1).result()
        return time.perf_counter() - started
