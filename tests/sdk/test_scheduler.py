"""The engine's scheduler driven step by step: no threads, no timing, nothing to flake.

Each test builds requests as `Engine.submit` does, calls `Scheduler.step()` itself and looks at
what every step did: which rows are queued, reading or generating, which graph calls ran, and
what ended with which outcome.
"""

from __future__ import annotations

import bard_sdk
import numpy as np
import pytest
from bard_sdk.requests import Completion, Outcome, Request, StreamWakeups
from bard_sdk.scheduler import Scheduler

from tests.conftest import wrapped


class Recording:
    """A runner that records the shape of every graph call, and fails the calls it is told
    to (by their number, counted from 0)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls: list[tuple[int, int]] = []
        self.fail_at: set[int] = set()

    def state(self, h: np.ndarray, c: np.ndarray):  # type: ignore[no-untyped-def]
        return self.inner.state(h, c)  # type: ignore[attr-defined]

    def step(self, tokens: np.ndarray, state):  # type: ignore[no-untyped-def]
        number = len(self.calls)
        self.calls.append(tokens.shape)
        if number in self.fail_at:
            raise RuntimeError(f"simulated failure of call {number}")
        return self.inner.step(tokens, state)  # type: ignore[attr-defined]


@pytest.fixture
def recorded(model: bard_sdk.Model) -> tuple[bard_sdk.Model, Recording]:
    return wrapped(model, Recording)


def request(model: bard_sdk.Model, prompt: str, n: int, **options: object) -> Request:
    """A request as `Engine.submit` builds it."""
    checked = model.options(max_new_chars=n, single_seed=True, **options)
    return Request(model.prompt_ids(prompt), len(prompt), checked.row_settings(1)[0],
                   checked.include_stop, StreamWakeups())


def drain(scheduler: Scheduler, limit: int = 10_000) -> dict[int, Outcome]:
    """Step until nothing is left; every request's outcome by id."""
    ended: dict[int, Outcome] = {}
    for _ in range(limit):
        if not scheduler.has_work:
            return ended
        for req, outcome in scheduler.step():
            assert req.id not in ended, "a request ends once"
            ended[req.id] = outcome
    raise AssertionError("the scheduler did not finish")


def text(outcome: Outcome) -> str:
    assert isinstance(outcome, Completion), outcome
    return outcome.text


def test_admission_is_oldest_first_up_to_max_active(recorded) -> None:  # type: ignore[no-untyped-def]
    model, _ = recorded
    scheduler = Scheduler(model, max_active=2, prefill_chunk=16)
    first, second, third = (request(model, "ROMEO:", n, seed=i) for i, n in enumerate((3, 8, 4)))
    for r in (first, second, third):
        scheduler.add(r)
    assert scheduler.step() == []
    assert (scheduler.active, [r.id for r in scheduler.queue]) == (2, [third.id])
    ended: dict[int, Outcome] = {}
    while first.id not in ended:
        assert [r.id for r in scheduler.queue] == [third.id], "no row was free yet"
        ended.update((r.id, o) for r, o in scheduler.step())
    ended.update((r.id, o) for r, o in scheduler.step())  # the freed row is taken
    assert not scheduler.queue and scheduler.active == 2
    ended.update(drain(scheduler))
    for r, (n, seed) in zip((first, second, third), ((3, 0), (8, 1), (4, 2))):
        assert text(ended[r.id]) == model.generate("ROMEO:", n, seed=seed)
        assert ended[r.id].finish_reason == "length"  # type: ignore[union-attr]
    assert scheduler.completed == 3 and scheduler.active == 0


def test_long_prompt_is_read_in_chunks_beside_generating_rows(recorded) -> None:  # type: ignore[no-untyped-def]
    """A 10-character prompt with prefill_chunk=4: chunks of 4, 4 and 1 (its last character
    rides in the batch's next step), while a generating row makes a character every step."""
    model, runner = recorded
    scheduler = Scheduler(model, max_active=4, prefill_chunk=4)
    short = request(model, "K", 40, seed=3)
    scheduler.add(short)
    scheduler.step()  # "K" is ready at once: it joins the batch, fed by the step's one call
    assert runner.calls == [(1, 1)]
    made = short.mailbox.poll()[0]
    long_prompt = "First Citi"
    reader = request(model, long_prompt, 5, seed=4)
    scheduler.add(reader)
    calls = []
    for _ in range(3):
        runner.calls.clear()
        scheduler.step()
        calls.append(runner.calls.copy())
        made += short.mailbox.poll()[0]
    # Each step: the reader's chunk, then the decode call; in the third the reader's last
    # character rides in the decode call (2 rows).
    assert calls == [[(1, 4), (1, 1)], [(1, 4), (1, 1)], [(1, 1), (2, 1)]]
    assert len(made) == 3, "the generating row made a character in every step"
    ended = drain(scheduler)
    assert text(ended[reader.id]) == model.generate(long_prompt, 5, seed=4)
    assert text(ended[short.id]) == model.generate("K", 40, seed=3)


def test_cancel_queued_reading_and_generating_rows(recorded) -> None:  # type: ignore[no-untyped-def]
    model, _ = recorded
    scheduler = Scheduler(model, max_active=2, prefill_chunk=2)
    generating = request(model, "R", 10**6, seed=1)
    reading = request(model, "ROMEO: " * 10, 10**6, seed=2)
    queued = request(model, "K", 10**6, seed=3)
    for r in (generating, reading, queued):
        scheduler.add(r)
    for _ in range(5):
        assert scheduler.step() == []
    assert len(scheduler.prefill) == 1 and len(scheduler.batch) == 1 and len(scheduler.queue) == 1
    for r in (generating, reading, queued):
        scheduler.cancel(r.id)
    ended = dict((r.id, o) for r, o in scheduler.step())
    assert set(ended) == {generating.id, reading.id, queued.id}, "all leave in one step"
    assert not scheduler.has_work and scheduler.active == 0
    assert [ended[r.id].finish_reason for r in (generating, reading, queued)] == ["cancelled"] * 3  # type: ignore[union-attr]
    made = text(ended[generating.id])
    assert len(made) == 4 and made == model.generate("R", 4, seed=1)  # steps 2 to 5
    assert text(ended[reading.id]) == text(ended[queued.id]) == ""
    assert scheduler.completed == 2, "the queued request never held a row"


def test_cancelling_a_finished_request_changes_nothing(model: bard_sdk.Model) -> None:
    scheduler = Scheduler(model, max_active=2, prefill_chunk=16)
    done = request(model, "ROMEO:", 2, seed=1)
    scheduler.add(done)
    assert text(drain(scheduler)[done.id]) == model.generate("ROMEO:", 2, seed=1)
    scheduler.cancel(done.id)
    assert scheduler.step() == [] and not scheduler.has_work


def test_a_runtime_failure_fails_the_rows_in_flight_and_the_queue_waits(recorded) -> None:  # type: ignore[no-untyped-def]
    model, runner = recorded
    scheduler = Scheduler(model, max_active=2, prefill_chunk=16)
    a, b, waiting = (request(model, "ROMEO:", 6, seed=i) for i in range(3))
    for r in (a, b, waiting):
        scheduler.add(r)
    scheduler.step()  # both rows read their prompts and join the batch; the third waits
    runner.fail_at = {len(runner.calls)}  # the next call: the decode step
    ended = scheduler.step()
    assert {r.id for r, _ in ended} == {a.id, b.id}
    for _, outcome in ended:
        assert isinstance(outcome, bard_sdk.BardError)
        assert "simulated failure" in str(outcome)
    assert scheduler.active == 0 and [r.id for r in scheduler.queue] == [waiting.id]
    assert text(drain(scheduler)[waiting.id]) == model.generate("ROMEO:", 6, seed=2)


def test_abort_ends_everything_with_the_error(model: bard_sdk.Model) -> None:
    scheduler = Scheduler(model, max_active=1, prefill_chunk=16)
    running, queued = request(model, "R", 10**6), request(model, "K", 10**6)
    scheduler.add(running)
    scheduler.add(queued)
    scheduler.step()
    closed = bard_sdk.EngineClosed("closed")
    assert {(r.id, o) for r, o in scheduler.abort(closed)} == {(running.id, closed),
                                                               (queued.id, closed)}
    assert not scheduler.has_work


@pytest.mark.parametrize("include_stop", [True, False])
def test_stop_strings_end_rows_and_hold_back_their_start(model: bard_sdk.Model,
                                                         include_stop: bool) -> None:
    full = model.generate("ROMEO:", 200, seed=5, stop="e ")
    assert full.endswith("e "), "the seed reaches the stop string"
    scheduler = Scheduler(model, max_active=1, prefill_chunk=16)
    r = request(model, "ROMEO:", 200, seed=5, stop="e ", include_stop=include_stop)
    scheduler.add(r)
    seen: list[str] = []  # the text handed over after each step
    ended: list = []  # type: ignore[type-arg]
    while not ended:
        ended = scheduler.step()
        seen.append((seen[-1] if seen else "") + r.mailbox.poll()[0])
    expected = full if include_stop else full[:-2]
    assert text(ended[0][1]) == seen[-1] == expected
    # The step before the end made the stop's "e": without the stop in the text, it waited.
    assert seen[-2] == (full[:-1] if include_stop else full[:-2])
