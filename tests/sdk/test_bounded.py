"""Memory follows the work done: chunked prefill with the state carried, outputs that grow."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import bard_sdk
import numpy as np
import pytest
from bard_sdk.generation import PREFILL_CHUNK, prefill
from bard_sdk.runtime import BoundRunner

from tests.conftest import wrapped
from tests.sdk.test_generation import CountingRunner

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east.\n"


def ids_of(model: bard_sdk.Model, lengths: list[int]) -> list[np.ndarray]:
    return [model.encode((TEXT * 40)[i : i + n]) for i, n in enumerate(lengths)]


@pytest.mark.parametrize("runner_kind", ["host", "bound"])
def test_chunked_prefill_equals_one_call(model: bard_sdk.Model, runner_kind: str) -> None:
    _, host = wrapped(model, lambda inner: inner)
    runner = host if runner_kind == "host" else BoundRunner(host.session, "cpu")
    prompts = ids_of(model, [1, 7, 30, 3, 9, 8])  # short rows, and long ones ending apart
    zero = model.zero_state(len(prompts))
    whole = prefill(runner, prompts, runner.state(*zero), chunk=10**9)
    chunked = prefill(runner, prompts, runner.state(*zero), chunk=4)
    np.testing.assert_allclose(chunked.logits, whole.logits, atol=1e-5)
    for got, want in zip(chunked.state.to_numpy(), whole.state.to_numpy()):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_long_prompt_beside_short_ones_costs_what_it_costs_alone(
        model: bard_sdk.Model) -> None:
    counted, counting = wrapped(model, CountingRunner)
    prompts = [(TEXT * 20)[:600], "ROMEO:", "JULIET:"]
    batched = counted.generate(prompts, 20, temperature=0.9, seed=[1, 2, 3])
    prefill_calls = counting.calls[:4]
    assert prefill_calls == [(2, len("JULIET:")), (1, PREFILL_CHUNK), (1, PREFILL_CHUNK),
                             (1, 600 - 2 * PREFILL_CHUNK)], "no row waits for or pads to another"
    assert all(rows <= 3 and time == 1 for rows, time in counting.calls[4:])
    assert batched == [model.generate(p, 20, temperature=0.9, seed=s)
                       for p, s in zip(prompts, [1, 2, 3])], "row order is kept"


def test_session_feeds_a_long_text_in_chunks(model: bard_sdk.Model) -> None:
    text = (TEXT * 20)[:1000]
    session = model.session()
    session.feed(text)
    assert session.length == 1000
    assert session.generate(30, temperature=0) == model.generate(text, 30, temperature=0)


def test_a_huge_limit_ended_by_a_stop_keeps_only_what_was_made(model: bard_sdk.Model) -> None:
    tracemalloc.start()
    try:
        text = model.generate("ROMEO:", 10**8, temperature=1.0, seed=2, stop=[" ", "\n"])
        session_text = model.session("ROMEO:").generate(10**8, seed=2, stop=[" ", "\n"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert text.endswith((" ", "\n")) and len(text) < 1000
    assert session_text == text
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB for a {len(text)}-character line"


def test_outputs_grow_past_their_first_buffer(model: bard_sdk.Model) -> None:
    texts = model.generate(["ROMEO:", "K"], 600, temperature=1.0, seed=[4, 5])
    assert [len(t) for t in texts] == [600, 600]
    assert texts == [model.generate(p, 600, temperature=1.0, seed=s)
                     for p, s in (("ROMEO:", 4), ("K", 5))]


RSS_SCRIPT = """
import sys, bard_sdk
model = bard_sdk.load(sys.argv[1], device="cpu", threads=1)
text = ("ROMEO:\\nBut soft, what light through yonder window breaks?\\n" * 20000)[:1_000_000]
out = model.generate(text, 5, temperature=0)
assert len(out) == 5
from bard.bench.procfs import peak_rss_kib
print(peak_rss_kib())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_million_character_prompt_fits_in_300_mb(tiny_artifact: Path) -> None:
    """Unchunked, this prompt needs ~2 GB with the test model (~13 GB with the shipped one)."""
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tiny_artifact)],
                         capture_output=True, text=True, timeout=300, check=True)
    peak_mb = int(out.stdout.split()[-1]) / 1024
    assert peak_mb <= 300, f"peak RSS {peak_mb:.0f} MB"
