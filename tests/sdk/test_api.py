"""The settled public API: keyword-only options, the step loop, logits processors, beams."""

from __future__ import annotations

import bard_sdk
import numpy as np
import pytest
from bard_sdk.beam import beam_search, log_softmax
from bard_sdk.generation import prefill

from tests.conftest import wrapped

PROMPTS = ["ROMEO:", "", "KING HENRY:\nOnce more unto the breach"]


def runner_of(model: bard_sdk.Model):  # type: ignore[no-untyped-def]
    return wrapped(model, lambda inner: inner)[1]


def test_options_are_keyword_only(model: bard_sdk.Model) -> None:
    with pytest.raises(TypeError):
        model.generate("ROMEO:", 10, 0.8)  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.stream("ROMEO:", 10, 0.8)  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.score("ROMEO:", "skip")  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.session("ROMEO:", "skip")  # type: ignore[misc]
    with pytest.raises(TypeError):
        bard_sdk.load(None, "cpu")  # type: ignore[misc]
    assert not hasattr(model, "ort_session")
    # The runner is public since issue 20, as the documented seam of `with_runner`: the
    # engine's scheduler, sessions and benches call the graph through it.
    assert callable(model.runner.state) and callable(model.runner.step)


def test_generator_loop_equals_generate(model: bard_sdk.Model) -> None:
    options = dict(temperature=0.9, top_k=20, stop="\n\n", seed=[4, 5, 6])
    gen = model.generator(PROMPTS, max_new_chars=60, **options)  # type: ignore[arg-type]
    seen_rows: list[list[int]] = []
    while not gen.done:
        assert gen.logits.shape == (len(gen.active), len(model.vocab))
        rows, ids = gen.step()
        seen_rows.append(rows.tolist())
        assert len(ids) == len(rows)
    assert gen.texts == model.generate(PROMPTS, 60, **options)  # type: ignore[arg-type]
    assert all(gen.finish_reason(r) in ("stop", "length") for r in range(3))
    assert seen_rows[0] == [0, 1, 2]
    with pytest.raises(bard_sdk.InvalidArgumentError, match="done"):
        gen.step()


def test_append_forces_text_into_a_row(model: bard_sdk.Model) -> None:
    gen = model.generator("ROMEO:", max_new_chars=30, temperature=0)
    for _ in range(5):
        gen.step()
    gen.append("\nJULIET:")
    while not gen.done:
        gen.step()
    text = gen.texts[0]
    head = text[:5]
    assert text[5:13] == "\nJULIET:"
    assert text[13:] == model.generate("ROMEO:" + head + "\nJULIET:", 25, temperature=0)


def test_a_processor_sees_the_step_and_ids_and_steers_the_sample(
        model: bard_sdk.Model) -> None:
    calls: list[tuple[int, tuple[int, ...]]] = []
    target = model.vocab.index["e"]

    def only_e(step: int, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        calls.append((step, ids.shape))
        forced = np.full_like(logits, -np.inf)
        forced[:, target] = 0.0
        return forced

    texts = model.generate(["ROMEO:", "x"], 7, temperature=1.0, seed=[1, 2],
                           logits_processors=[only_e])
    assert texts == ["eeeeeee", "eeeeeee"]
    assert calls == [(step, (2, step)) for step in range(7)]


def test_ban_characters(model: bard_sdk.Model) -> None:
    banned = bard_sdk.BanCharacters(model.vocab, " e\n")
    texts = model.generate(PROMPTS, 200, seed=[1, 2, 3], logits_processors=[banned])
    assert all(not set(" e\n") & set(text) for text in texts)
    with pytest.raises(bard_sdk.InvalidArgumentError, match="does not have"):
        bard_sdk.BanCharacters(model.vocab, "€")


def test_repetition_penalty_changes_only_recent_characters() -> None:
    penalty = bard_sdk.RepetitionPenalty(2.0, window=2)
    ids = np.array([[0, 1, 2], [3, 3, -1]])  # the second row is one character shorter
    logits = np.array([[1.0, 1.0, -1.0, 1.0], [1.0, 1.0, 1.0, -4.0]], dtype=np.float32)
    out = penalty(3, ids, logits.copy())
    np.testing.assert_allclose(out, [[1.0, 0.5, -2.0, 1.0], [1.0, 1.0, 1.0, -8.0]])


def test_processors_keep_batched_rows_equal_to_rows_alone(model: bard_sdk.Model) -> None:
    processors = [bard_sdk.RepetitionPenalty(1.5, window=8),
                  bard_sdk.BanCharacters(model.vocab, "z")]
    seeds = [7, 8, 9]
    batched = model.generate(PROMPTS, 80, seed=seeds, logits_processors=processors)
    alone = [model.generate(p, 80, seed=s, logits_processors=processors)
             for p, s in zip(PROMPTS, seeds)]
    assert batched == alone
    plain = model.generate(PROMPTS, 80, seed=seeds)
    assert batched != plain, "the penalty changes what is sampled"


def test_bad_processors_are_refused(model: bard_sdk.Model) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError, match="logits_processors"):
        model.generate("x", 5, logits_processors=[42])  # type: ignore[list-item]
    with pytest.raises(bard_sdk.InvalidArgumentError, match="shape"):
        model.generate("x", 5, logits_processors=[lambda s, i, z: z[:, :3]])


def test_session_generate_is_built_on_the_same_loop(model: bard_sdk.Model) -> None:
    session = model.session("ROMEO:")
    first = session.generate(40, seed=3, stop="\n\n")
    assert first == model.generate("ROMEO:", 40, seed=3, stop="\n\n")
    second = session.generate(20, temperature=0)
    assert second == model.generate("ROMEO:" + first, 20, temperature=0)


def brute_force_best(model: bard_sdk.Model, prompt: str, length: int) -> tuple[str, float]:
    """The most likely `length`-character continuation, by scoring every one of them."""
    vocab = len(model.vocab)
    ids = model.encode(prompt)
    logits, h, c = model.forward(ids[None, :], *model.zero_state(1))
    totals = log_softmax(logits[:, -1])[0]  # [vocab]
    sequences = np.arange(vocab)[:, None]
    h, c = np.repeat(h, vocab, axis=1), np.repeat(c, vocab, axis=1)
    for step in range(length - 1):
        logits, h, c = model.forward(sequences[:, -1:], h, c)
        n = len(sequences)
        totals = (totals[:, None] + log_softmax(logits[:, -1])).ravel()  # [n * vocab]
        sequences = np.concatenate([np.repeat(sequences, vocab, axis=0),
                                    np.tile(np.arange(vocab), n)[:, None]], axis=1)
        if step < length - 2:
            h, c = np.repeat(h, vocab, axis=1), np.repeat(c, vocab, axis=1)
    best = int(totals.argmax())
    return model.vocab.decode(sequences[best]), float(totals[best])


def test_beam_search_with_enough_beams_finds_the_most_likely_text(
        model: bard_sdk.Model) -> None:
    """With a beam for every prefix the search is exhaustive, so it must find the brute-force
    optimum: through the API for 2 characters, and in the search itself for 3."""
    vocab = len(model.vocab)
    expected, _ = brute_force_best(model, "ROMEO:", 2)
    assert model.generate("ROMEO:", 2, num_beams=vocab, length_penalty=0.0) == expected
    expected, likelihood = brute_force_best(model, "ROMEO:", 3)
    batch = prefill(runner_of(model), [model.encode("ROMEO:")],
                    runner_of(model).state(*model.zero_state(1)))
    [(ids, found_likelihood)] = beam_search(runner_of(model), batch, 3, vocab**2, 0.0, [])
    assert model.vocab.decode(list(ids)) == expected
    assert found_likelihood == pytest.approx(likelihood, abs=1e-9)


def test_beams_are_batched_per_prompt(model: bard_sdk.Model) -> None:
    batched = model.generate(PROMPTS, 30, num_beams=4, stop="\n")
    assert batched == [model.generate(p, 30, num_beams=4, stop="\n") for p in PROMPTS]
    with pytest.raises(bard_sdk.InvalidArgumentError, match="beam search"):
        model.generate("x", 5, num_beams=2, top_k=3)
    with pytest.raises(bard_sdk.InvalidArgumentError, match="num_beams"):
        model.generate("x", 5, num_beams=0)


def test_with_runner_is_a_view(model: bard_sdk.Model) -> None:
    calls: list[tuple[int, ...]] = []

    class Counting:
        def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
            self.inner = inner

        def state(self, h, c):  # type: ignore[no-untyped-def]
            return self.inner.state(h, c)

        def step(self, tokens, state):  # type: ignore[no-untyped-def]
            calls.append(tokens.shape)
            return self.inner.step(tokens, state)

    counted = model.with_runner(Counting)
    assert counted.generate("ROMEO:", 5, seed=1) == model.generate("ROMEO:", 5, seed=1)
    assert calls == [(1, 6), *[(1, 1)] * 4]
    model.generate("ROMEO:", 5, seed=1)
    assert len(calls) == 5, "the original model is unchanged"
