"""What the SDK bounds so that one caller cannot slow every other one (issue 21): stop strings,
a bad logits processor, the text a stream keeps, the prefill budget."""

from __future__ import annotations

from collections.abc import Callable

import bard_sdk
import numpy as np
import pytest
from bard_sdk.engine import PREFILL_SHARE
from bard_sdk.options import MAX_STOP_CHARS, MAX_STOPS
from bard_sdk.scheduler import STREAM_KEEP_CHARS, PrefillBudget, Scheduler

from tests.conftest import wrapped
from tests.sdk.test_scheduler import Recording, drain, request, text


@pytest.mark.parametrize("stop", [["e" * (MAX_STOP_CHARS + 1)], ["e"] * (MAX_STOPS + 1)])
def test_stop_strings_have_a_documented_bound(model: bard_sdk.Model, stop: list[str]) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError) as err:
        model.generate("A", 3, stop=stop)
    assert err.value.param == "stop"
    with bard_sdk.Engine(model, max_active=2) as engine, \
            pytest.raises(bard_sdk.InvalidArgumentError):
        engine.submit("A", 3, stop=stop)
    assert model.generate("A", 3, stop=["e" * MAX_STOP_CHARS], seed=1) == \
        model.generate("A", 3, seed=1)


def test_a_rows_stop_history_leaves_with_it(model: bard_sdk.Model) -> None:
    scheduler = Scheduler(model, max_active=4, prefill_chunk=16)
    long_stop = request(model, "A", 3, stop=["e" * MAX_STOP_CHARS], seed=1)
    plain = request(model, "A", 40, seed=2)
    for r in (long_stop, plain):
        scheduler.add(r)
    ended: set[int] = set()
    for _ in range(100):
        if long_stop.id in ended:
            break
        if len(scheduler.batch) == 2:
            assert scheduler.batch.core.history.shape[1] == MAX_STOP_CHARS
        ended.update(r.id for r, _ in scheduler.step())
    assert ended == {long_stop.id} and len(scheduler.batch) == 1
    assert scheduler.batch.core.history.shape[1] == 1, "the long stop's history was released"
    outcomes = drain(scheduler)
    assert outcomes[plain.id].text == model.generate("A", 40, seed=2)  # type: ignore[union-attr]


def returns_nan(step: int, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return np.full_like(logits, np.nan)


def masks_everything(step: int, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return np.full_like(logits, -np.inf)


def returns_strings(step: int, ids: np.ndarray, logits: np.ndarray) -> object:
    return [["x"] * logits.shape[1]] * logits.shape[0]


def returns_wrong_shape(step: int, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return logits[:, :-1]


@pytest.mark.parametrize("processor", [returns_nan, masks_everything, returns_strings,
                                       returns_wrong_shape])
def test_a_bad_logits_processor_is_named(model: bard_sdk.Model, processor: object) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError) as err:
        model.generate("A", 5, logits_processors=[processor], seed=1)
    assert processor.__name__ in str(err.value)  # type: ignore[attr-defined]
    assert err.value.param == "logits_processors"


def test_masking_some_logits_is_fine(model: bard_sdk.Model) -> None:
    allowed = model.vocab.encode("ab")

    def only_a_or_b(step: int, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        masked = np.full_like(logits, -np.inf)
        masked[:, allowed] = logits[:, allowed]
        return masked

    text = model.generate("A", 20, logits_processors=[only_a_or_b], seed=3)
    assert len(text) == 20 and set(text) <= {"a", "b"}


def test_a_stream_keeps_only_its_unread_text(model: bard_sdk.Model) -> None:
    n = 20_000
    with bard_sdk.Engine(model, max_active=2) as engine:
        request = engine.submit("A", n, seed=4)
        pieces, kept = [], []
        for piece in request:
            pieces.append(piece)
            rows = list(engine.scheduler.batch.rows)
            if rows:
                kept.append(len(rows[0].produced))
        done = request.result()
    assert "".join(pieces) == model.generate("A", n, seed=4)
    assert kept and max(kept) < 2 * STREAM_KEEP_CHARS < n, max(kept)
    assert (done.text, done.completion_chars) == ("", n)


def simulate(budget: PrefillBudget, steps: int, step_s: float, chunk_s: Callable[[int], float]
             ) -> tuple[float, float, float]:
    """Drive the budget as `Scheduler.step` does, with rows generating and prompts waiting:
    (seconds of prefill, seconds of decoding, the longest chunk)."""
    prefill = longest = 0.0
    for _ in range(steps):
        width = budget.width(generating=True)
        if width:
            cost = chunk_s(width)
            budget.spent(cost, width, generating=True)
            prefill, longest = prefill + cost, max(longest, cost)
        budget.earned(step_s, reading=True)
    return prefill, steps * step_s, longest


@pytest.mark.parametrize(("step_ms", "overhead_ms", "column_ms"),
                         [(1.0, 0.5, 0.1), (0.4, 0.5, 0.12), (3.0, 1.0, 0.9)])
def test_prefill_budget_gives_prompts_their_share_in_small_slices(
        step_ms: float, overhead_ms: float, column_ms: float) -> None:
    """Whatever a decode step and a chunk's column cost (a quiet machine, a loaded one),
    prompts get PREFILL_SHARE of the decode steps' time, in chunks a few steps long instead
    of a full 256-column pass (which would cost 26-230 ms here): at most twice the smallest."""
    budget = PrefillBudget(PREFILL_SHARE, max_width=256)
    assert budget.width(generating=True) == budget.min_width  # nothing measured: a probe
    prefill, decode, longest = simulate(
        budget, 5000, step_ms / 1000, lambda w: (overhead_ms + column_ms * w) / 1000)
    assert PREFILL_SHARE * 0.9 < prefill / decode <= PREFILL_SHARE * 1.01, prefill / decode
    full_chunk_s = (overhead_ms + column_ms * 256) / 1000
    assert longest <= (overhead_ms + column_ms * 2 * budget.min_width) / 1000
    assert longest < full_chunk_s / 2


def test_prefill_budget_repays_a_long_chunk_and_saves_nothing_up() -> None:
    budget = PrefillBudget(PREFILL_SHARE, max_width=256)
    budget.spent(0.050, 16, generating=True)  # a chunk that ran long (the machine stalled)
    owed_steps = 0
    while budget.width(generating=True) == 0:
        budget.earned(0.001, reading=True)
        owed_steps += 1
    assert owed_steps >= 0.050 / (PREFILL_SHARE * 0.001)  # repaid by the steps that follow
    for _ in range(10_000):  # decoding with no prompt waiting earns nothing
        budget.earned(0.001, reading=False)
    assert budget.width(generating=True) == 0


def test_prefill_budget_without_generating_rows_bounds_a_chunk_in_time() -> None:
    """Nothing generating: prompts are read every step, in chunks of at most max_chunk_s, so
    a request arriving then waits about that long, not a full chunk."""
    budget = PrefillBudget(PREFILL_SHARE, max_width=256, min_width=16, max_chunk_s=0.025)
    budget.spent(0.016, 16, generating=False)  # 1 ms a column
    assert budget.width(generating=False) == 25
    budget.spent(0.001, 16, generating=False)  # faster now (the mean of the two measured)
    assert budget.width(generating=False) == int(0.025 / ((0.001 + 0.001 / 16) / 2))
    for _ in range(10):
        budget.spent(0.001, 256, generating=False)
    assert budget.width(generating=False) == 256  # never past prefill_chunk


def test_a_short_prompt_is_not_padded_to_a_long_ones_chunk(model: bard_sdk.Model) -> None:
    """A chunk stops at the end of the shortest prompt it reads: the 5-character prompt
    starts generating after a 4-column call, not a 64-column one, and both texts are as
    `generate` makes them."""
    model, runner = wrapped(model, Recording)
    scheduler = Scheduler(model, max_active=4, prefill_chunk=64)
    long_prompt, short_prompt = "ROMEO: " * 40, "KING:"
    long, short = request(model, long_prompt, 5, seed=1), request(model, short_prompt, 30, seed=2)
    scheduler.add(long)
    scheduler.add(short)
    scheduler.step()
    assert runner.calls[0] == (2, len(short_prompt) - 1)
    assert [row.request for row in scheduler.batch.rows] == [short]
    ended = drain(scheduler)
    assert max(width for _, width in runner.calls) <= 64
    assert text(ended[short.id]) == model.generate(short_prompt, 30, seed=2)
    assert text(ended[long.id]) == model.generate(long_prompt, 5, seed=1)
