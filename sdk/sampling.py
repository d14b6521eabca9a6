"""Vectorised sampling over a batch, with a random stream per row.

Each row draws its uniforms from a counter-based generator keyed by (row seed, step), so a row
samples the same characters whether it runs alone or inside any batch, and no Python loop over
rows is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .arguments import integer, real
from .cdf import inverse_cdf, weights_of
from .large_vocab import blocked_choice, nucleus_choice, top_k_choice
from .softmax_graph import softmax_blocks

MASK64 = (1 << 64) - 1
# Below this temperature sampling is greedy (argmax). At 1e-6 a logit gap of 1e-4 already
# weighs e**-100 against the top choice, so nothing is lost; far below it, logits / temperature
# overflows (1e-320 once turned every row into "\n").
TEMPERATURE_FLOOR = 1e-6
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class SamplingParams:
    """Checked once per call, outside the decode loop."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    @classmethod
    def checked(cls, temperature: object, top_k: object, top_p: object,
                vocab_size: int) -> SamplingParams:
        """Validated parameters as plain Python numbers (numpy scalars accepted, bool never)."""
        return cls(
            real(temperature, "temperature", minimum=0.0),
            None if top_k is None else integer(top_k, "top_k", minimum=1, maximum=vocab_size),
            None if top_p is None else real(top_p, "top_p", above=0.0, maximum=1.0))

    def validate(self, vocab_size: int) -> None:
        self.checked(self.temperature, self.top_k, self.top_p, vocab_size)

    @property
    def greedy(self) -> bool:
        """Temperatures below TEMPERATURE_FLOOR are greedy (see there)."""
        return self.temperature < TEMPERATURE_FLOOR


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def row_keys(seeds: list[int | None]) -> np.ndarray:
    """One 64-bit key per row; a None seed draws fresh entropy from the OS."""
    values = [int.from_bytes(os.urandom(8), "little") if s is None else int(s) & MASK64
              for s in seeds]
    return _splitmix64(np.array(values, dtype=np.uint64))


def uniforms(keys: np.ndarray, step: int | np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1), one per row, for decode step `step` (one for all rows, or
    one per row)."""
    steps = np.broadcast_to(np.asarray(step, dtype=np.int64), keys.shape)
    return uniform_table(keys, steps, 1)[:, 0]


def uniform_table(keys: np.ndarray, steps: np.ndarray, count: int) -> np.ndarray:
    """[rows, count]: column j holds `uniforms(keys, steps + j)`, made in one pass (a dozen
    small numpy calls cost as much for one step as for dozens)."""
    ahead = (steps[:, None] + np.arange(count)).astype(np.uint64)
    with np.errstate(over="ignore"):
        bits = _splitmix64(keys[:, None] + ahead * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sample(logits: np.ndarray, params: SamplingParams, u: np.ndarray | None) -> np.ndarray:
    """Next ids [batch] from logits [batch, vocab]: greedy, or temperature / top-k / top-p
    with one uniform per row (`u`, unused when greedy).

    A row's weights are exp((logit - max) / temperature) in float32; the chosen id is the
    first whose cumulative weight, in id order over the characters kept, passes u x the kept
    weight, so a row's choice depends only on its own logits and uniform. Nothing sorts the
    vocabulary: over LARGE_VOCAB characters the weights are onnxruntime's softmax (the same
    weights, normalised), the inverse CDF goes by blocks, and top-k / top-p sort only the
    characters above a threshold that a strided sample of the row suggests
    (`large_vocab.py`), so their cost grows with the characters kept.
    """
    if params.greedy or u is None:
        return logits.argmax(axis=1)
    z = np.ascontiguousarray(logits, dtype=np.float32)
    rows, vocab = z.shape
    if not rows:
        return np.zeros(0, dtype=np.int64)
    top_k = params.top_k if params.top_k is not None and params.top_k < vocab else None
    top_p = params.top_p if params.top_p is not None and params.top_p < 1.0 else None
    scale = np.float32(1.0 / params.temperature)
    fraction = u  # float64 in [0, 1): fraction x a float32 total stays below the total
    if vocab > LARGE_VOCAB:
        if top_k is not None:
            return top_k_choice(z, top_k, top_p, scale, fraction)
        probabilities, sums = softmax_blocks(z, scale)  # padded to whole blocks
        if top_p is not None:
            return nucleus_choice(probabilities, top_p, fraction, vocab)
        return blocked_choice(probabilities, fraction, sums)
    if top_k is not None:
        ids = np.argpartition(z, -top_k, axis=1)[:, -top_k:]
        ids.sort(axis=1)  # id order: the choice does not depend on how the partition fell
        values = np.take_along_axis(z, ids, axis=1)
        weights = weights_of(values, values.max(axis=1, keepdims=True), scale)
        if top_p is not None:
            weights = keep_nucleus(weights, top_p)
        return ids[np.arange(len(ids)), inverse_cdf(weights, fraction)]
    weights = weights_of(z, z.max(axis=1, keepdims=True), scale)
    if top_p is not None:
        weights = keep_nucleus(weights, top_p)
    return inverse_cdf(weights, fraction)


LARGE_VOCAB = 256  # up to here one numpy pass of each kind is cheapest (the 65 path)
NUCLEUS_FIRST_GUESS = 256  # weights sorted to find a nucleus, then 4x as many, ...


def keep_nucleus(weights: np.ndarray, top_p: float) -> np.ndarray:
    """The weights of the smallest set of largest ones whose mass passes top_p of the row's:
    a character is kept when the mass of those above it is at most top_p x the total (ties
    with the last one kept are kept); the others weigh 0 (in place).

    Only the largest weights are sorted, as many as the nucleus needs: the first guess
    (partitioned out, then sorted) holds the nucleus when its mass passes the limit; rows
    whose nucleus is larger try four times as many, up to the whole row."""
    rows, width = weights.shape
    limit = top_p * weights.sum(axis=1)
    smallest = np.zeros(rows, dtype=np.float32)
    pending, guess = np.arange(rows), NUCLEUS_FIRST_GUESS
    while len(pending):
        if 2 * guess >= width:
            guess = width
        top = weights[pending] if guess == width else np.partition(
            weights[pending], width - guess, axis=1)[:, width - guess :]
        ordered = -np.sort(-top, axis=1)
        mass = np.cumsum(ordered, axis=1)
        found = (mass[:, -1] > limit[pending]) | (guess == width)
        before = mass[found] - ordered[found]
        kept = np.maximum((before <= limit[pending[found], None]).sum(axis=1), 1)
        smallest[pending[found]] = ordered[found][np.arange(len(kept)), kept - 1]
        pending, guess = pending[~found], 4 * guess
    weights *= weights >= smallest[:, None]
    return weights
