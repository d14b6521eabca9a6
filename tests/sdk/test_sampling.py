"""Sampling: the float32, candidates-only paths draw exactly the distribution of the plain
float64 definition (full sort, full cumulative sum), for small and large vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
from bard_sdk.sampling import SamplingParams, sample


def reference_probabilities(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The definition, in float64 over the whole vocabulary (the sampler before issue 27)."""
    z = logits.astype(np.float64) / params.temperature
    if params.top_k is not None and params.top_k < z.shape[0]:
        kth = np.sort(z)[-params.top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    if params.top_p is not None and params.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]
        p[order[before > params.top_p * p.sum()]] = 0.0
    return p / p.sum()


def peaked_logits(vocab: int, seed: int) -> np.ndarray:
    """A few likely characters over a long flat tail, as a trained model's next-character
    scores look; some characters banned (-inf)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, vocab).astype(np.float32)
    logits[rng.choice(vocab, 12, replace=False)] += rng.uniform(3.0, 8.0, 12).astype(np.float32)
    logits[rng.choice(vocab, 3, replace=False)] = -np.inf
    return logits


CASES = [SamplingParams(1.0), SamplingParams(0.7), SamplingParams(1.3, top_k=50),
         SamplingParams(0.8, top_p=0.9), SamplingParams(1.0, top_p=0.5),
         SamplingParams(0.9, top_k=200, top_p=0.8), SamplingParams(2.0, top_k=7),
         SamplingParams(5.0, top_p=0.95)]  # flat: the nucleus is most of the vocabulary


@pytest.mark.parametrize(("vocab", "n"), [(65, 4000), (3000, 2000), (20_000, 500)])
@pytest.mark.parametrize("params", CASES, ids=str)
def test_every_path_draws_the_defined_distribution(vocab: int, n: int,
                                                   params: SamplingParams) -> None:
    """Stratified uniforms (i + 0.5) / n turn frequencies into the inverse CDF itself: each
    character is drawn p x n times, to within one draw and float32 rounding."""
    logits = peaked_logits(vocab, seed=vocab)
    fractions = (np.arange(n) + 0.5) / n
    drawn = sample(np.repeat(logits[None], n, axis=0), params, fractions)
    frequencies = np.bincount(drawn, minlength=vocab) / n
    expected = reference_probabilities(logits, params)
    assert np.abs(frequencies - expected).max() <= 1.5 / n + 1e-4
    assert (frequencies[expected == 0] == 0).all(), "never a character of probability 0"


@pytest.mark.parametrize("vocab", [65, 6005])
@pytest.mark.parametrize("params", CASES[:6], ids=str)
def test_a_row_draws_the_same_alone_or_in_any_batch(vocab: int, params: SamplingParams) -> None:
    rows = np.stack([peaked_logits(vocab, seed) for seed in range(16)])
    u = np.random.default_rng(1).random(16)
    together = sample(rows, params, u)
    alone = [int(sample(rows[i : i + 1], params, u[i : i + 1])[0]) for i in range(16)]
    assert together.tolist() == alone
    assert sample(rows[::-1].copy(), params, u[::-1]).tolist() == alone[::-1]


def test_a_uniform_just_below_one_never_reaches_a_banned_character() -> None:
    logits = np.zeros((4, 3000), dtype=np.float32)
    logits[:, -5:] = -np.inf  # the last columns, where an overshoot would land
    u = np.full(4, np.nextafter(1.0, 0.0))
    for params in CASES[:4]:
        assert (sample(logits, params, u) < 2995).all()
