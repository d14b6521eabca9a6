"""The engine's per-character logprobs: equal to `Model.score` and to the SDK's own log-softmax
of the raw logits, only for the rows that ask, whatever shares the batch."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import bard_sdk
import numpy as np
import pytest
from bard_sdk.logprobs import MAX_LOGPROBS, CharLogprob, log_softmax

SHAKESPEARE = (Path(__file__).resolve().parents[2].parent / "shared" / "data"
               / "tinyshakespeare.txt")


def reference_generation(model: bard_sdk.Model, prompt: str, n: int, **options: object
                         ) -> tuple[str, list[np.ndarray]]:
    """The SDK's own step loop: its text and, per character, the log-softmax of the raw
    logits it sampled from."""
    gen = model.generator(prompt, max_new_chars=n, **options)  # type: ignore[arg-type]
    dists = []
    while not gen.done:
        dists.append(log_softmax(gen.logits[0]))
        gen.step()
    return gen.text(0), dists


def check_entries(entries: tuple[CharLogprob, ...], text: str, dists: list[np.ndarray],
                  model: bard_sdk.Model, top: int) -> None:
    assert len(entries) == len(text) == len(dists[: len(text)])
    for entry, char, dist in zip(entries, text, dists):
        assert model.vocab.chars[entry.id] == char
        assert entry.logprob == pytest.approx(dist[entry.id], abs=1e-5)
        assert len(entry.top) == top
        best = np.argsort(-dist, kind="stable")[:top]
        assert [i for i, _ in entry.top] == best.tolist()
        assert [lp for _, lp in entry.top] == pytest.approx(dist[best].tolist(), abs=1e-5)


@pytest.mark.parametrize(("options", "top"), [
    (dict(temperature=0.8, seed=3), 5),
    (dict(temperature=1.3, top_k=7, seed=11), 0),   # raw distribution, not the sampled one
    (dict(temperature=0.0), MAX_LOGPROBS),
])
def test_generated_logprobs_are_the_raw_log_softmax(model: bard_sdk.Model,
                                                    engine: bard_sdk.Engine,
                                                    options: dict[str, object],
                                                    top: int) -> None:
    text, dists = reference_generation(model, "ROMEO:", 60, **options)
    done = engine.submit("ROMEO:", 60, logprobs=top, **options).result()  # type: ignore[arg-type]
    assert done.text == text and done.prompt_logprobs is None
    assert done.logprobs is not None
    check_entries(done.logprobs, text, dists, model, top)


def test_prompt_logprobs_equal_model_score(model: bard_sdk.Model,
                                           engine: bard_sdk.Engine) -> None:
    # longer than several prefill chunks (16), so the state is carried across chunks
    prompt = SHAKESPEARE.read_text()[5000:5300]
    done = engine.submit(prompt, 0, prompt_logprobs=2).result()
    assert done.text == "" and done.completion_chars == 0
    entries = done.prompt_logprobs
    assert entries is not None and len(entries) == len(prompt)
    assert entries[0].logprob is None and entries[0].top == ()
    assert "".join(model.vocab.chars[e.id] for e in entries) == prompt
    total = sum(e.logprob for e in entries[1:])  # type: ignore[misc]
    assert total == pytest.approx(-model.score(prompt).total_nats, abs=1e-5 * len(prompt))
    for i in (1, 2, 17, 150, len(prompt) - 1):  # one character at a time, too
        one = model.score(prompt[: i + 1]).total_nats - model.score(prompt[:i]).total_nats
        assert entries[i].logprob == pytest.approx(-one, abs=1e-5)
        assert len(entries[i].top) == 2 and entries[i].top[0][1] >= entries[i].top[1][1]


def test_echo_and_generation_together(model: bard_sdk.Model, engine: bard_sdk.Engine) -> None:
    """Prompt entries, then generated ones; the first generated character is predicted from
    the whole prompt (the state after its last character)."""
    text, dists = reference_generation(model, "KING:", 30, seed=2)
    done = engine.submit("KING:", 30, seed=2, logprobs=1, prompt_logprobs=1).result()
    assert done.text == text and done.prompt_logprobs is not None
    assert [e.id for e in done.prompt_logprobs] == model.encode("KING:").tolist()
    check_entries(done.logprobs, text, dists, model, 1)  # type: ignore[arg-type]


def test_an_empty_prompt_is_primed_and_has_no_prompt_entries(model: bard_sdk.Model,
                                                             engine: bard_sdk.Engine) -> None:
    text, dists = reference_generation(model, "", 20, seed=4)
    done = engine.submit("", 20, seed=4, logprobs=0, prompt_logprobs=0).result()
    assert done.prompt_logprobs == () and done.text == text
    check_entries(done.logprobs, text, dists, model, 0)  # type: ignore[arg-type]
    one = engine.submit("Q", 0, prompt_logprobs=3).result()
    assert [(e.id, e.logprob) for e in one.prompt_logprobs] == [  # type: ignore[union-attr]
        (model.vocab.index["Q"], None)]


def test_rows_without_logprobs_are_untouched_beside_rows_with(model: bard_sdk.Model,
                                                              engine: bard_sdk.Engine) -> None:
    stops = ["\n", "the"]
    asks = [engine.submit(f"{name}:", 50, seed=k, stop=stops, include_stop=False,
                          logprobs=3 if k % 2 else None)
            for k, name in enumerate(["ROMEO", "JULIET", "KING", "QUEEN", "NURSE", "FRIAR"])]
    for k, (ask, name) in enumerate(zip(asks, ["ROMEO", "JULIET", "KING", "QUEEN", "NURSE",
                                                "FRIAR"])):
        done = ask.result()
        full, dists = reference_generation(model, f"{name}:", 50, seed=k, stop=stops)
        ended = [s for s in stops if full.endswith(s)]
        assert done.text == (full[: len(full) - len(ended[0])] if ended else full)
        if k % 2:  # the stop string is cut from the entries as from the text
            check_entries(done.logprobs, done.text, dists, model, 3)  # type: ignore[arg-type]
        else:
            assert done.logprobs is None


def test_a_stream_hands_over_entries_with_its_text(model: bard_sdk.Model,
                                                   engine: bard_sdk.Engine) -> None:
    text, dists = reference_generation(model, "Hark", 200, seed=8)

    async def read() -> tuple[str, list[CharLogprob]]:
        request = engine.submit("Hark", 200, seed=8, logprobs=2, prompt_logprobs=1)
        got, entries = "", []
        async for piece, new in request.apieces():
            got += piece
            entries += new
            assert len(entries) - 4 == len(got) or (not got and len(entries) <= 4)
        return got, entries

    got, entries = asyncio.run(read())
    assert got == text
    assert [e.id for e in entries[:4]] == model.encode("Hark").tolist()
    check_entries(tuple(entries[4:]), text, dists, model, 2)


@pytest.mark.parametrize("bad", [-1, 21, 1.5, True, "2"])
def test_bad_counts_are_refused(engine: bard_sdk.Engine, bad: object) -> None:
    for name in ("logprobs", "prompt_logprobs"):
        with pytest.raises(bard_sdk.InvalidArgumentError, match=name) as err:
            engine.submit("x", 3, **{name: bad})  # type: ignore[arg-type]
        assert err.value.param == name


def test_scores_a_probability_distribution(model: bard_sdk.Model,
                                           engine: bard_sdk.Engine) -> None:
    done = engine.submit("To be", 5, seed=1, logprobs=MAX_LOGPROBS).result()
    for entry in done.logprobs:  # type: ignore[union-attr]
        mass = sum(math.exp(lp) for _, lp in entry.top)
        assert 0 < mass <= 1 + 1e-9 and entry.logprob is not None and entry.logprob <= 0
