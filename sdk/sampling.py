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


def uniforms(keys: np.ndarray, step: int) -> np.ndarray:
    """Uniform floats in [0, 1), one per row, for decode step `step`."""
    with np.errstate(over="ignore"):
        bits = _splitmix64(keys + np.uint64(step) * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sample(logits: np.ndarray, params: SamplingParams, u: np.ndarray | None) -> np.ndarray:
    """Next ids [batch] from logits [batch, vocab]: greedy, or temperature / top-k / top-p
    with one uniform per row (`u`, unused when greedy).

    The row's weights are exp((logit - max) / temperature) in float32; the chosen id is the
    first whose cumulative weight (in id order over the characters kept) passes u x the kept
    weight, so a row's choice depends only on its own logits and uniform. Top-k and top-p
    first narrow each row to candidates (every character at or above a threshold, found
    without sorting the vocabulary), so their cost grows with the characters kept.
    """
    if params.greedy or u is None:
        return logits.argmax(axis=1)
    z = np.ascontiguousarray(logits, dtype=np.float32)
    vocab = z.shape[1]
    top_k = params.top_k if params.top_k is not None and params.top_k < vocab else None
    top_p = params.top_p if params.top_p is not None and params.top_p < 1.0 else None
    scale = np.float32(1.0 / params.temperature)
    fraction = below_one(u)
    if top_k is None and top_p is None:
        return inverse_cdf_blocked(z, scale, fraction)
    if top_k is not None:
        ids, values = candidates_above(z, kth_largest_bound(z, top_k))
        kth = np.partition(values, -top_k, axis=1)[:, -top_k, None]
        values[values < kth] = -np.inf
        weights = weights_of(values, values.max(axis=1, keepdims=True), scale)
        if top_p is not None:
            weights = nucleus(weights, weights.sum(axis=1), top_p)
    else:
        ids, weights = nucleus_candidates(z, scale, top_p)  # type: ignore[arg-type]
    return ids[np.arange(len(ids)), inverse_cdf(weights, fraction)]


BLOCK = 64  # characters per block of the two-level inverse CDF over a whole vocabulary
_LAST_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))


def below_one(u: np.ndarray) -> np.ndarray:
    """The uniforms as float32, kept below 1 (u x total must stay below the total)."""
    return np.minimum(u.astype(np.float32), _LAST_BELOW_ONE)


def weights_of(values: np.ndarray, top: np.ndarray, scale: np.float32) -> np.ndarray:
    """exp((values - top) * scale) in float32, in a new array (-inf values weigh 0)."""
    weights = np.subtract(values, top, dtype=np.float32)
    weights *= scale
    return np.exp(weights, out=weights)


def inverse_cdf(weights: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Per row, the first column whose cumulative weight exceeds fraction x the row's total:
    never a column of weight 0 (the target stays below the total)."""
    cdf = np.cumsum(weights, axis=1)
    target = fraction * cdf[:, -1]
    chosen = (cdf <= target[:, None]).sum(axis=1)
    return np.minimum(chosen, weights.shape[1] - 1)


def inverse_cdf_blocked(z: np.ndarray, scale: np.float32, fraction: np.ndarray) -> np.ndarray:
    """`inverse_cdf` over the whole vocabulary without a cumulative sum across it: the weights
    are summed per block of BLOCK characters, the block is found on those sums, and the
    character inside it. Small vocabularies take the plain cumulative sum."""
    rows, vocab = z.shape
    if vocab <= 4 * BLOCK:
        return inverse_cdf(weights_of(z, z.max(axis=1, keepdims=True), scale), fraction)
    blocks = -(-vocab // BLOCK)
    padded = np.zeros((rows, blocks * BLOCK), dtype=np.float32)
    weights = padded[:, :vocab]
    np.subtract(z, z.max(axis=1, keepdims=True), out=weights)
    weights *= scale
    np.exp(weights, out=weights)
    grouped = padded.reshape(rows, blocks, BLOCK)
    cumulative = np.cumsum(grouped.sum(axis=2), axis=1)
    target = fraction * cumulative[:, -1]
    block = np.minimum((cumulative <= target[:, None]).sum(axis=1), blocks - 1)
    row = np.arange(rows)
    before = np.where(block > 0, cumulative[row, block - 1], np.float32(0.0))
    inside = grouped[row, block]
    within = (np.cumsum(inside, axis=1) <= (target - before)[:, None]).sum(axis=1)
    last_nonzero = BLOCK - 1 - (inside[:, ::-1] > 0).argmax(axis=1)
    return block * BLOCK + np.minimum(within, last_nonzero)  # rounding at the block's end


def kth_largest_bound(z: np.ndarray, k: int) -> np.ndarray:
    """Per row, a value at or below its k-th largest logit, from the maxima of at least k
    disjoint groups of columns (k distinct columns reach the k-th largest group maximum), so
    the columns at or above it are few; -inf when the vocabulary is too small to bother."""
    rows, vocab = z.shape
    groups = max(2 * k, 128)
    if 4 * groups > vocab:
        return np.full(rows, -np.inf, dtype=np.float32)
    size = vocab // groups
    maxima = z[:, : size * groups].reshape(rows, size, groups).max(axis=1)
    tail = z[:, size * groups :]
    pool = np.concatenate([maxima, tail], axis=1) if tail.shape[1] else maxima
    return np.partition(pool, -k, axis=1)[:, -k]


def candidates_above(z: np.ndarray, threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ids (ascending) and values of the columns at or above the row's
    threshold, padded to the widest row with id 0 and value -inf (weight 0)."""
    rows = z.shape[0]
    mask = z >= threshold[:, None]
    counts = mask.sum(axis=1)
    where_row, where_col = np.nonzero(mask)
    offset = np.arange(len(where_col)) - np.repeat(np.cumsum(counts) - counts, counts)
    width = max(int(counts.max(initial=0)), 1)
    ids = np.zeros((rows, width), dtype=np.int64)
    values = np.full((rows, width), -np.inf, dtype=np.float32)
    ids[where_row, offset] = where_col
    values[where_row, offset] = z[where_row, where_col]
    return ids, values


def nucleus(weights: np.ndarray, total: np.ndarray, top_p: float) -> np.ndarray:
    """The weights of the smallest set of largest ones whose mass reaches top_p of `total`:
    a character is kept when the mass of the characters above it is at most top_p x total
    (ties with the last one kept are kept); the others weigh 0."""
    ordered = -np.sort(-weights, axis=1)
    before = np.cumsum(ordered, axis=1) - ordered
    kept = (before <= (top_p * total)[:, None]).sum(axis=1)
    smallest = ordered[np.arange(len(ordered)), np.maximum(kept, 1) - 1]
    return np.where(weights >= smallest[:, None], weights, np.float32(0.0))


def nucleus_candidates(z: np.ndarray, scale: np.float32, top_p: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Top-p without a sort of the vocabulary: the columns at or above a threshold whose
    mass already passes top_p of the row's total hold the nucleus, so only they are sorted.
    The threshold is the m-th largest of 256 group maxima, for m = 8, 32, ...; rows that
    need more fall back to the whole row."""
    rows, vocab = z.shape
    weights = weights_of(z, z.max(axis=1, keepdims=True), scale)
    total = weights.sum(axis=1)
    threshold = np.full(rows, -np.inf, dtype=np.float32)
    groups = 256
    if vocab >= 4 * groups:
        size = vocab // groups
        maxima = -np.sort(-weights[:, : size * groups].reshape(rows, size, groups).max(axis=1),
                          axis=1)
        open_rows = np.arange(rows)
        for m in (8, 32, 128):
            trial = maxima[open_rows, m - 1]
            mass = np.where(weights[open_rows] >= trial[:, None], weights[open_rows],
                            np.float32(0.0)).sum(axis=1)
            enough = mass > top_p * total[open_rows]
            threshold[open_rows[enough]] = trial[enough]
            open_rows = open_rows[~enough]
            if not len(open_rows):
                break
    ids, kept = candidates_above(weights, threshold)
    return ids, nucleus(kept.clip(min=0.0), total, top_p)
