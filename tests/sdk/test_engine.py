"""The continuous-batching engine: each request equals `Model.generate` alone, under load."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import bard_sdk
import numpy as np
import pytest

LONG = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
        * 8)  # longer than several prefill chunks
PROMPTS = ["ROMEO:", "", LONG, "K", "KING RICHARD III:\n"]


def mixed_cases(count: int, seed: int) -> list[tuple[str, int, dict[str, object]]]:
    """Prompts of very different lengths, greedy and sampled, filters, stops and seeds."""
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        options: dict[str, object] = {
            "temperature": rng.choice([0.0, 0.7, 1.0, 1.3]), "seed": 1000 + i,
            "top_k": rng.choice([None, 5, 30]), "top_p": rng.choice([None, 0.9]),
            "stop": rng.choice([None, "\n", ["e", "th"], "\n\n"])}
        cases.append((rng.choice(PROMPTS), rng.randint(0, 90), options))
    return cases


def wait_until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def test_requests_from_many_threads_equal_generate_alone(
        model: bard_sdk.Model, engine: bard_sdk.Engine) -> None:
    cases = mixed_cases(40, seed=1)
    results: list[str | None] = [None] * len(cases)

    def call(i: int) -> None:
        prompt, n, options = cases[i]
        results[i] = engine.generate(prompt, n, **options)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = [model.generate(p, n, **o) for p, n, o in cases]  # type: ignore[arg-type]
    assert results == expected
    stats = engine.stats()
    assert stats["active"] == 0 and stats["queued"] == 0
    assert stats["completed"] == sum(1 for _, n, _ in cases if n > 0)


def test_asyncio_callers_and_streams_equal_generate_alone(
        model: bard_sdk.Model, engine: bard_sdk.Engine) -> None:
    cases = mixed_cases(16, seed=2)

    async def streamed(prompt: str, n: int, options: dict[str, object]) -> str:
        return "".join([piece async for piece in engine.astream(prompt, n, **options)])

    async def main() -> list[str]:
        calls = [engine.agenerate(p, n, **o) if i % 2 else streamed(p, n, o)
                 for i, (p, n, o) in enumerate(cases)]
        out = await asyncio.gather(*calls)
        return [r.text if isinstance(r, bard_sdk.Completion) else r for r in out]

    expected = [model.generate(p, n, **o) for p, n, o in cases]  # type: ignore[arg-type]
    assert asyncio.run(main()) == expected


def test_thread_stream_yields_the_same_text(model: bard_sdk.Model,
                                            engine: bard_sdk.Engine) -> None:
    pieces = list(engine.stream(LONG, 120, seed=4, temperature=0.9))
    assert "".join(pieces) == model.generate(LONG, 120, seed=4, temperature=0.9)
    assert len(pieces) > 1, "streamed in pieces, not as one block at the end"


@pytest.mark.parametrize("stop", ["\n", ["e", "th"], "e\n"])
def test_without_stop_string_text_and_stream_drop_it(model: bard_sdk.Model,
                                                     engine: bard_sdk.Engine,
                                                     stop: str | list[str]) -> None:
    for seed in range(6):
        full = model.generate("ROMEO:", 80, seed=seed, stop=stop)
        stops = [stop] if isinstance(stop, str) else stop
        ended = [s for s in stops if full.endswith(s)]
        expected = full[: len(full) - max(map(len, ended))] if ended else full
        request = engine.submit("ROMEO:", 80, seed=seed, stop=stop, include_stop=False)
        streamed = "".join(request)
        completion = request.result()
        assert streamed == expected
        assert completion.text == ""  # a stream's text is handed over, not kept (issue 21)
        assert engine.submit("ROMEO:", 80, seed=seed, stop=stop,
                             include_stop=False).result().text == expected
        assert completion.finish_reason == ("stop" if ended else "length")
        assert completion.completion_chars == len(full)


def test_finish_reasons_and_counts(engine: bard_sdk.Engine) -> None:
    done = engine.submit("ROMEO:", 25, seed=1).result()
    assert (done.finish_reason, len(done.text), done.prompt_chars) == ("length", 25, 6)
    assert engine.submit("ROMEO:", 0).result().finish_reason == "length"


def test_bad_arguments_raise_in_the_callers_thread(engine: bard_sdk.Engine) -> None:
    with pytest.raises(ValueError, match="temperature"):
        engine.submit("ROMEO:", 10, temperature=-1)
    with pytest.raises(bard_sdk.UnknownCharacterError, match=r"'\{' at 1"):
        engine.submit("R{", 10)
    with pytest.raises(ValueError, match="max_new_chars"):
        engine.submit("R", -1)
    with pytest.raises(ValueError, match="seed"):
        engine.submit("R", 3, seed=[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_active"):
        bard_sdk.Engine(engine.model, max_active=0)
    assert engine.stats()["queued"] == 0


def test_backpressure_refuses_past_the_queue_bound(model: bard_sdk.Model) -> None:
    with bard_sdk.Engine(model, max_active=1, max_queued=1) as small:
        running = small.submit("ROMEO:", 10**7)
        wait_until(lambda: small.stats()["active"] == 1)
        waiting = small.submit("ROMEO:", 5)
        with pytest.raises(bard_sdk.EngineOverloaded, match="max_queued=1"):
            small.submit("ROMEO:", 5)
        running.cancel()
        assert running.result(timeout=30).finish_reason == "cancelled"
        assert len(waiting.result(timeout=30).text) == 5


def test_cancel_frees_the_row(model: bard_sdk.Model, engine: bard_sdk.Engine) -> None:
    request = engine.submit("ROMEO:", 10**7, seed=1)
    wait_until(lambda: engine.stats()["steps"] > 3)
    request.cancel()
    completion = request.result(timeout=30)
    assert completion.finish_reason == "cancelled"
    assert completion.text == model.generate("ROMEO:", len(completion.text), seed=1)
    assert engine.stats()["active"] == 0


def test_a_stream_left_early_cancels_its_request(engine: bard_sdk.Engine) -> None:
    request = engine.submit("ROMEO:", 10**7, seed=2)
    for _ in request:
        break  # the caller stops listening
    assert request.result(timeout=30).finish_reason == "cancelled"
    wait_until(lambda: engine.stats()["active"] == 0)


def test_close_fails_unfinished_requests(model: bard_sdk.Model) -> None:
    engine = bard_sdk.Engine(model, max_active=1)
    running = engine.submit("ROMEO:", 10**7)
    queued = engine.submit("ROMEO:", 10**7)
    engine.close()
    for request in (running, queued):
        with pytest.raises(bard_sdk.EngineClosed):
            request.result(timeout=30)
    with pytest.raises(bard_sdk.EngineClosed):
        engine.submit("ROMEO:", 3)


def test_runtime_failure_fails_its_rows_and_the_engine_keeps_serving(
        model: bard_sdk.Model) -> None:
    class Failing:
        def __init__(self, inner: object) -> None:
            self.inner, self.fail = inner, True

        def state(self, h: np.ndarray, c: np.ndarray):  # type: ignore[no-untyped-def]
            return self.inner.state(h, c)  # type: ignore[attr-defined]

        def step(self, tokens: np.ndarray, state):  # type: ignore[no-untyped-def]
            if self.fail and tokens.shape[1] == 1:
                self.fail = False
                raise RuntimeError("simulated onnxruntime failure")
            return self.inner.step(tokens, state)  # type: ignore[attr-defined]

    with bard_sdk.Engine(model.with_runner(Failing)) as engine:
        with pytest.raises(bard_sdk.BardError, match="simulated onnxruntime failure"):
            engine.generate("ROMEO:", 20, seed=1)
        assert engine.generate("ROMEO:", 20, seed=1) == model.generate("ROMEO:", 20, seed=1)


def test_interpreter_exits_with_an_engine_still_running(tiny_artifact: Path) -> None:
    script = (
        "import sys, threading, bard_sdk\n"
        f"engine = bard_sdk.Engine(bard_sdk.load({str(tiny_artifact)!r}, device='cpu'))\n"
        "request = engine.submit('ROMEO:', 10**8)\n"
        "def wait():\n"
        "    try:\n"
        "        request.result()\n"
        "    except bard_sdk.EngineClosed:\n"
        "        pass  # what a caller still waiting at exit is told\n"
        "threading.Thread(target=wait, daemon=True).start()\n"
        "print(engine.generate('ROMEO:', 5, seed=1))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.rstrip("\n")) >= 1 and "Traceback" not in result.stderr


def test_a_row_joining_a_running_batch_costs_no_graph_call(model: bard_sdk.Model) -> None:
    """A request's last prompt character rides in the batch's next step: B joining while A
    generates adds no call (here its prompt is one character, so it needs no prefill)."""
    from tests.conftest import wrapped

    class Counting:
        def __init__(self, inner: object) -> None:
            self.inner, self.calls = inner, 0

        def state(self, h: np.ndarray, c: np.ndarray):  # type: ignore[no-untyped-def]
            return self.inner.state(h, c)  # type: ignore[attr-defined]

        def step(self, tokens: np.ndarray, state):  # type: ignore[no-untyped-def]
            self.calls += 1
            return self.inner.step(tokens, state)  # type: ignore[attr-defined]

    view, counter = wrapped(model, Counting)
    with bard_sdk.Engine(view) as engine:
        alone = engine.generate("ROMEO:", 3000, seed=1)
        calls_alone = counter.calls
        counter.calls = 0
        stream = iter(engine.submit("ROMEO:", 3000, seed=1))
        head = next(stream)  # A is generating
        joined = engine.generate("K", 20, seed=2)
        assert head + "".join(stream) == alone
        assert counter.calls == calls_alone
    assert joined == model.generate("K", 20, seed=2)
