"""OpenAI's frequency/presence penalties and logit_bias, vLLM's repetition_penalty and min_p:
the semantics against a plain numpy reference, per row inside batches and the engine."""

from __future__ import annotations

import random
import threading
from collections import Counter

import bard_sdk
import numpy as np
import pytest
from bard_sdk.penalties import Penalties, PenaltyRows

PROMPTS = ["ROMEO:", "", "the the the the ", "K", "KING RICHARD III:\nWhat, ho!\n" * 6]


def reference(logits: np.ndarray, prompt: list[int], generated: list[int], temperature: float,
              *, frequency: float = 0.0, presence: float = 0.0, repetition: float = 1.0,
              min_p: float = 0.0, bias: dict[int, float] | None = None) -> np.ndarray:
    """One row by the book, in float64 with Python loops: logit_bias, then vLLM's
    repetition penalty over prompt + generated, OpenAI's frequency and presence penalties
    over the generated characters, then min_p on softmax(z / T)."""
    z = logits.astype(np.float64).copy()
    for ident, value in (bias or {}).items():
        z[ident] += value
    for ident in set(prompt) | set(generated):
        z[ident] = z[ident] / repetition if z[ident] > 0 else z[ident] * repetition
    for ident, count in Counter(generated).items():
        z[ident] -= count * frequency + presence
    if min_p > 0 and temperature >= 1e-6:
        p = np.exp((z - z.max()) / temperature)
        p /= p.sum()
        z[p < min_p * p.max()] = -np.inf
    return z


def random_penalties(rng: random.Random, vocab: int) -> dict[str, object]:
    return {"frequency": rng.choice([0.0, 0.5, -1.0, 2.0]),
            "presence": rng.choice([0.0, 1.0, -2.0]),
            "repetition": rng.choice([1.0, 1.3, 0.8, 5.0]),
            "min_p": rng.choice([0.0, 0.05, 0.3]),
            "bias": {rng.randrange(vocab): rng.uniform(-100, 100)
                     for _ in range(rng.randint(0, 3))}}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_penalty_rows_equal_the_numpy_reference(seed: int) -> None:
    """Rows join with prompts, sample some ids, some leave: each row's adjusted logits equal
    the reference, and rows without penalties are untouched."""
    rng, gen = random.Random(seed), np.random.default_rng(seed)
    vocab, count = rng.choice([7, 65, 300]), 9
    settings = [random_penalties(rng, vocab) if i % 3 else {} for i in range(count)]
    temperatures = [rng.choice([0.0, 0.7, 1.0, 1.5]) for _ in range(count)]
    prompts = [gen.integers(0, vocab, rng.randint(1, 12)) for _ in range(count)]
    penalties = [Penalties(s["frequency"], s["presence"], s["repetition"], s["min_p"],
                           tuple(sorted(s["bias"].items()))) if s else Penalties()
                 for s in settings]
    rows = PenaltyRows(vocab)
    rows.join(0, penalties[:5], temperatures[:5], prompts[:5])
    rows.join(5, penalties[5:], temperatures[5:], prompts[5:])
    generated: list[list[int]] = [[] for _ in range(count)]
    alive = np.arange(count)
    for step in range(12):
        logits = gen.normal(0, 3, (len(alive), vocab)).astype(np.float32)
        adjusted = rows.apply(logits)
        for k, row in enumerate(alive):
            s = settings[row]
            expected = logits[k].astype(np.float64) if not s else reference(
                logits[k], prompts[row].tolist(), generated[row], temperatures[row],
                frequency=s["frequency"], presence=s["presence"], repetition=s["repetition"],
                min_p=s["min_p"], bias=s["bias"])
            assert np.array_equal(np.isinf(adjusted[k]), np.isinf(expected))
            finite = np.isfinite(expected)
            np.testing.assert_allclose(adjusted[k][finite], expected[finite], rtol=1e-5,
                                       atol=1e-4)
        ids = gen.integers(0, vocab, len(alive))
        rows.record(ids)
        for row, ident in zip(alive, ids.tolist()):
            generated[row].append(ident)
        if step % 4 == 3:  # some rows leave, the rest reorder
            keep = np.sort(gen.choice(len(alive), len(alive) - 1, replace=False))[::-1].copy()
            rows.keep(keep, len(alive))
            alive = alive[keep]


class ReferenceProcessor:
    """The reference as a logits processor: what `generate` with the arguments must equal."""

    def __init__(self, prompts: list[list[int]], temperature: float, **penalties: object):
        self.prompts, self.temperature, self.penalties = prompts, temperature, penalties

    def __call__(self, step: int, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return np.stack([reference(logits[r], self.prompts[r], [i for i in ids[r] if i >= 0],
                                   self.temperature, **self.penalties)  # type: ignore[arg-type]
                         for r in range(len(logits))]).astype(np.float32)


@pytest.mark.parametrize(("arguments", "names"), [
    ({"frequency_penalty": 1.5}, {"frequency": 1.5}),
    ({"presence_penalty": -1.0, "frequency_penalty": 0.4}, {"presence": -1.0, "frequency": 0.4}),
    ({"repetition_penalty": 1.8}, {"repetition": 1.8}),
    ({"min_p": 0.2, "top_k": 20}, {"min_p": 0.2}),
    ({"logit_bias": {"e": -100, 3: 4.5}}, {"bias": {"e": -100, 3: 4.5}}),
])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_generate_equals_the_reference_processor(model: bard_sdk.Model,
                                                 arguments: dict[str, object],
                                                 names: dict[str, object],
                                                 temperature: float) -> None:
    prompts = ["ROMEO:", "", "the the the the "]
    if "bias" in names:
        names = {"bias": {model.vocab.index[k] if isinstance(k, str) else k: v
                          for k, v in names["bias"].items()}}  # type: ignore[union-attr]
    arguments = dict(arguments)
    top_k = arguments.pop("top_k", None)
    ids = [model.prompt_ids(p).tolist() for p in prompts]
    got = model.generate(prompts, 60, temperature=temperature, top_k=top_k, seed=[4, 5, 6],
                         **arguments)  # type: ignore[arg-type]
    expected = model.generate(prompts, 60, temperature=temperature, top_k=top_k,
                              seed=[4, 5, 6],
                              logits_processors=[ReferenceProcessor(ids, temperature, **names)])
    assert got == expected
    plain = model.generate(prompts, 60, temperature=temperature, top_k=top_k, seed=[4, 5, 6])
    if not ("min_p" in names and temperature == 0.0):  # min_p keeps the top: greedy as is
        assert got != plain  # the arguments did something


def test_clear_effects(model: bard_sdk.Model) -> None:
    """What a user can see: a banned character never comes, a forced one always does, and
    min_p = 1 keeps only the most likely character (greedy)."""
    assert "e" not in model.generate("ROMEO:", 200, seed=1, logit_bias={"e": -100})
    assert model.generate("ROMEO:", 20, seed=1, logit_bias={"z": 100}) == "z" * 20
    assert (model.generate("ROMEO:", 80, seed=2, min_p=1.0)
            == model.generate("ROMEO:", 80, temperature=0))


def test_a_batch_row_equals_its_generation_alone(model: bard_sdk.Model) -> None:
    """Rows with and without penalties side by side, ending at different times (stops and
    limits): each equals itself alone."""
    rng = random.Random(7)
    cases = []
    for i in range(8):
        options: dict[str, object] = {"seed": 50 + i, "temperature": rng.choice([0.0, 0.8]),
                                      "stop": rng.choice([None, "\n", "th"])}
        if i % 2:
            options.update(frequency_penalty=rng.choice([0.5, 2.0]),
                           repetition_penalty=rng.choice([None, 1.4]),
                           min_p=rng.choice([None, 0.1]), logit_bias={"a": -5.0})
        cases.append((rng.choice(PROMPTS), rng.randint(1, 70), options))
    for prompt, limit, options in cases:
        batch = model.generate([prompt, "ROMEO:", prompt], limit, seed=[options["seed"], 1,
                                                                         options["seed"]],
                               **{k: v for k, v in options.items() if k != "seed"})
        alone = model.generate(prompt, limit, **options)  # type: ignore[arg-type]
        assert batch[0] == batch[2] == alone


def test_engine_rows_equal_generate_alone(model: bard_sdk.Model) -> None:
    """Many threads submit requests with and without penalties; rows join and leave the
    running batch at different steps; each text equals `Model.generate` alone."""
    rng = random.Random(3)
    cases = []
    for i in range(24):
        options: dict[str, object] = {"seed": 900 + i, "temperature": rng.choice([0.0, 1.0]),
                                      "top_p": rng.choice([None, 0.9]),
                                      "stop": rng.choice([None, "\n"])}
        if rng.random() < 0.6:
            options.update(presence_penalty=rng.choice([None, 1.0]),
                           frequency_penalty=rng.choice([None, -0.5, 1.0]),
                           repetition_penalty=rng.choice([None, 1.3, 0.9]),
                           min_p=rng.choice([None, 0.05]),
                           logit_bias=rng.choice([None, {0: 2.0, "e": -3.0}]))
        cases.append((rng.choice(PROMPTS), rng.randint(0, 60), options))
    results: dict[int, str] = {}
    with bard_sdk.Engine(model, max_active=6, prefill_chunk=8) as engine:
        def run(i: int) -> None:
            prompt, limit, options = cases[i]
            results[i] = engine.generate(prompt, limit, **options)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for i, (prompt, limit, options) in enumerate(cases):
        assert results[i] == model.generate(prompt, limit, **options), i  # type: ignore[arg-type]


@pytest.mark.parametrize(("arguments", "param"), [
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"presence_penalty": "1"}, "presence_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": True}, "repetition_penalty"),
    ({"min_p": 1.5}, "min_p"),
    ({"min_p": float("nan")}, "min_p"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"logit_bias": {999: 1.0, "{": 1.0, "ab": 2.0}}, "logit_bias"),
    ({"logit_bias": {1: 101}}, "logit_bias[1]"),
])
def test_bad_arguments_are_named(model: bard_sdk.Model, arguments: dict[str, object],
                                 param: str) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError) as caught:
        model.generate("x", 5, **arguments)  # type: ignore[arg-type]
    assert caught.value.param == param
    with bard_sdk.Engine(model) as engine, pytest.raises(bard_sdk.InvalidArgumentError):
        engine.submit("x", 5, **arguments)  # type: ignore[arg-type]


def test_bad_logit_bias_keys_are_all_named(model: bard_sdk.Model) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError, match=r"999.*'ab'"):
        model.generate("x", 5, logit_bias={999: 1.0, "e": 1.0, "ab": 2.0})


def test_beam_search_refuses_penalties(model: bard_sdk.Model) -> None:
    with pytest.raises(bard_sdk.InvalidArgumentError, match="repetition_penalty"):
        model.generate("x", 5, num_beams=2, repetition_penalty=1.2)


def test_neutral_values_are_the_plain_path(model: bard_sdk.Model) -> None:
    neutral = model.generate("ROMEO:", 50, seed=3, frequency_penalty=0.0, presence_penalty=None,
                             repetition_penalty=1.0, min_p=0.0, logit_bias={})
    assert neutral == model.generate("ROMEO:", 50, seed=3)
    assert not Penalties.checked(65, {}, frequency_penalty=0.0, logit_bias={3: 0.0}).active
