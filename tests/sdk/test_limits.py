"""What the SDK bounds so that one caller cannot slow every other one (issue 21): stop strings,
a bad logits processor, the text a stream keeps, the prefill budget."""

from __future__ import annotations

import math
from pathlib import Path

import bard_sdk
import numpy as np
import pytest
from bard_sdk.engine import PREFILL_SHARE
from bard_sdk.options import MAX_STOP_CHARS, MAX_STOPS
from bard_sdk.scheduler import STREAM_KEEP_CHARS, PrefillBudget, Scheduler

from tests.sdk.test_scheduler import drain, request


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> bard_sdk.Model:
    return bard_sdk.load(tiny_artifact, device="cpu")


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


def test_prefill_budget_spaces_chunks_out_while_rows_generate() -> None:
    """A chunk that cost 10 decode steps' time waits until the steps have earned it back at
    PREFILL_SHARE: the generating rows keep 1 / (1 + share) of their pace at least."""
    budget = PrefillBudget(PREFILL_SHARE)
    assert budget.allows(generating=True)  # nothing spent yet: the first chunk runs at once
    budget.spent(0.010)
    steps = 0
    while not budget.allows(generating=True):
        budget.earned(0.001)
        steps += 1
    assert steps == math.ceil(10 / PREFILL_SHARE)
    assert budget.allows(generating=False)  # nothing generating: read prompts every step
    for _ in range(1000):  # a long stretch of decoding buys no burst of chunks later
        budget.earned(0.001)
    budget.spent(0.010)
    budget.spent(0.010)
    assert not budget.allows(generating=True)
