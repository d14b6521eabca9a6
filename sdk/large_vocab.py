"""Sampling over a large vocabulary (thousands of characters), at a cost that grows with the
characters kept rather than with a sort of the vocabulary.

Temperature: the inverse CDF by blocks (block sums, then one block's cumulative sum).
top-k and top-p: a threshold suggested by a strided sample of the row (every STRIDE-th
character, sorted) picks the candidates, the characters at or above it; the rule is then
applied to the candidates alone, in id order. A threshold is used only once it is proven to
hold every character the rule keeps (top-k: at least k candidates; top-p: the candidates'
mass passes the nucleus' limit); a row whose guess falls short takes a safe one (the whole
row at worst). Every quantity is computed per row, so a row draws the same in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

BLOCK = 64  # characters per block of the two-level inverse CDF
SAMPLE_SIZE = 384  # characters of a row sorted to suggest a threshold
TOP_K_SLACK = 2.0  # the threshold aims at this many times k candidates
TOP_K_EXTRA = 8  # ... and this many more sampled ranks (a few sampled values are noisy)
NUCLEUS_SLACK = 0.15  # ... and at the nucleus of top_p + this x (1 - top_p) in the sample
# Candidate weights (at most 1) become integers of 2**-FIXED_BITS: their cumulative sums are
# then exact (the same in any batch) and fast (numpy's float cumsum is ~7x slower).
FIXED_BITS = 40


def block_sums(weights: np.ndarray) -> np.ndarray:
    """[rows, blocks] float32 sums of BLOCK consecutive columns, the last block partial:
    einsum over a strided view, no copy (a block's sum is the same in any batch)."""
    rows, vocab = weights.shape
    full = vocab // BLOCK
    sums = np.empty((rows, full + 1), dtype=np.float32)
    view = as_strided(weights, shape=(rows, full, BLOCK),
                      strides=(weights.strides[0], BLOCK * weights.strides[1],
                               weights.strides[1]), writeable=False)
    np.einsum("ijk->ij", view, out=sums[:, :full])
    sums[:, full] = weights[:, full * BLOCK :].sum(axis=1)
    return sums


def blocked_choice(weights: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """`inverse_cdf` without a cumulative sum across the vocabulary: the block is found on
    the cumulative block sums, then the character on that block's own cumulative sum."""
    rows, vocab = weights.shape
    cumulative = np.cumsum(block_sums(weights), axis=1)
    target = fraction * cumulative[:, -1]
    block = np.minimum((cumulative <= target[:, None]).sum(axis=1), cumulative.shape[1] - 1)
    row = np.arange(rows)
    before = np.where(block > 0, cumulative[row, block - 1], 0.0)
    columns = block[:, None] * BLOCK + np.arange(BLOCK)
    inside = np.take_along_axis(weights, np.minimum(columns, vocab - 1), axis=1)
    inside[columns >= vocab] = 0.0
    within = (np.cumsum(inside, axis=1) <= (target - before)[:, None]).sum(axis=1)
    last_nonzero = BLOCK - 1 - (inside[:, ::-1] > 0).argmax(axis=1)  # rounding at its end
    return np.minimum(block * BLOCK + np.minimum(within, last_nonzero), vocab - 1)


def strided_sample(values: np.ndarray) -> np.ndarray:
    """About SAMPLE_SIZE values of each row, every stride-th, sorted largest first."""
    stride = max(1, values.shape[1] // SAMPLE_SIZE)
    return -np.sort(-values[:, ::stride], axis=1)


def fixed_point(weights: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] as int64 multiples of 2**-FIXED_BITS."""
    return np.rint(weights * np.float32(2.0**FIXED_BITS)).astype(np.int64)


def fixed_inverse_cdf(weights: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """`inverse_cdf` on fixed-point weights [rows, width]: the first column whose cumulative
    weight passes fraction x the row's total, never a column of weight 0."""
    cdf = np.cumsum(weights, axis=1)
    total = cdf[:, -1]
    target = np.minimum(np.floor(fraction * total).astype(np.int64), total - 1)
    return (cdf <= target[:, None]).sum(axis=1)


def keep_largest(weights: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """The nucleus rule on float32 candidate weights [rows, width] in id order: in order of
    weight (ties: lower id first), a weight is kept while the mass of those before it is at
    most the row's limit (in fixed point). Returns the kept weights in fixed point, the
    others 0. (The sort is of the float32 weights: fixed_point is monotone.)"""
    ordered = fixed_point(-np.sort(-weights, axis=1))
    fixed = fixed_point(weights)
    before = np.cumsum(ordered, axis=1) - ordered
    kept = np.maximum((before <= limit[:, None]).sum(axis=1), 1)
    smallest = ordered[np.arange(len(weights)), kept - 1][:, None]
    above = fixed > smallest
    tied = fixed == smallest
    room = kept - above.sum(axis=1)  # how many of the ties with the smallest fit
    fixed *= above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))
    return fixed


@dataclass(frozen=True)
class Candidates:
    """Per row, the columns whose value is at least the row's threshold, in id order:
    `columns` and `starts` flat (row r's are columns[starts[r] : starts[r] + counts[r]]),
    their values padded to the longest row ([rows, width]; `fill` where padded)."""

    columns: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    values: np.ndarray
    held: np.ndarray  # per row, the sum of its candidates' values (float64, in id order)

    @classmethod
    def above(cls, values: np.ndarray, threshold: np.ndarray, fill: float) -> Candidates:
        rows, vocab = values.shape
        flat = np.flatnonzero(values >= threshold[:, None])
        row_of, columns = np.divmod(flat, vocab)
        chosen = values.ravel()[flat]
        counts = np.bincount(row_of, minlength=rows)
        starts = np.cumsum(counts) - counts
        width = max(int(counts.max()), 1)
        padded = np.full(rows * width, fill, dtype=np.float32)
        padded[row_of * width + np.arange(len(flat)) - starts[row_of]] = chosen
        held = np.bincount(row_of, weights=chosen, minlength=rows)
        return cls(columns, starts, counts, padded.reshape(rows, width), held)

    def ids(self, slots: np.ndarray) -> np.ndarray:
        """The columns at each row's candidate slot."""
        return self.columns[self.starts + slots]


def top_k_candidates(z: np.ndarray, k: int) -> Candidates:
    """Candidates (logits; -inf padding) holding the k largest logits of every row and all
    ties with the k-th: those at or above the sample's value of rank ~2k/stride + 8; a row with
    fewer than k of them takes the whole row (rare: a row flatter than its sample)."""
    sample = strided_sample(z)
    rank = int(np.ceil(TOP_K_SLACK * k * sample.shape[1] / z.shape[1])) + TOP_K_EXTRA
    threshold = (sample[:, rank - 1].copy() if rank <= sample.shape[1]
                 else np.full(len(z), -np.inf, dtype=np.float32))
    while True:
        found = Candidates.above(z, threshold, -np.inf)
        short = (found.counts < k) & (threshold > -np.inf)
        if not short.any():
            return found
        threshold[short] = -np.inf


def top_k_choice(z: np.ndarray, k: int, top_p: float | None, scale: np.float32,
                 fraction: np.ndarray) -> np.ndarray:
    """Next ids under top-k (then top-p within it): the characters whose logit is at least the
    k-th largest (ties with it kept), their weights over the candidates only."""
    found = top_k_candidates(z, k)
    values = found.values
    ordered = -np.sort(-values, axis=1)
    kth, top = ordered[:, k - 1 : k], ordered[:, :1]
    weights = np.subtract(values, top, dtype=np.float32)
    weights *= scale
    np.exp(weights, out=weights)
    weights[values < kth] = 0.0
    fixed = fixed_point(weights)
    if top_p is not None:
        fixed = keep_largest(weights, top_p * fixed.sum(axis=1))
    return found.ids(fixed_inverse_cdf(fixed, fraction))


def nucleus_candidates(weights: np.ndarray, top_p: float, total: np.ndarray) -> Candidates:
    """Candidates (weights; 0 padding) holding every character of each row's nucleus: those
    at or above the sample's own nucleus at a slightly larger mass. A row whose candidates
    weigh no more than the limit takes the bound (1 - top_p) x total / vocab (the characters
    below it weigh less than 1 - top_p of the total), and should rounding defeat that too,
    0: the whole row."""
    sample = strided_sample(weights)
    mass = np.cumsum(sample, axis=1)
    level = top_p + NUCLEUS_SLACK * (1.0 - top_p)
    rank = np.maximum(((mass - sample) <= level * mass[:, -1:]).sum(axis=1), 1)
    threshold = sample[np.arange(len(weights)), rank - 1]
    limit = top_p * total
    for fallback in ((1.0 - top_p) * total / weights.shape[1], np.zeros_like(total), None):
        found = Candidates.above(weights, threshold, 0.0)
        short = found.held <= limit
        if fallback is None or not short.any():
            return found
        threshold[short] = fallback[short]
    raise AssertionError("unreachable")


def nucleus_choice(weights: np.ndarray, top_p: float, fraction: np.ndarray) -> np.ndarray:
    """Next ids under top-p from the weights [rows, vocab] of the whole rows."""
    total = block_sums(weights).sum(axis=1)
    found = nucleus_candidates(weights, top_p, total)
    kept = keep_largest(found.values, top_p * total * 2.0**FIXED_BITS)
    return found.ids(fixed_inverse_cdf(kept, fraction))
