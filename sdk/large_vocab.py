"""Sampling over a large vocabulary (thousands of characters), at a cost that grows with the
characters kept rather than with a sort of the vocabulary.

Temperature and top-p start from the probabilities onnxruntime computes (softmax_graph.py).
Temperature: the inverse CDF by blocks (block sums, then one block's cumulative sum).
top-k and top-p: a threshold suggested by a strided sample of the row (every STRIDE-th
character, sorted) picks the candidates, the characters at or above it; the rule is then
applied to the candidates alone, in id order. A threshold is used only once it is proven to
hold every character the rule keeps (top-k: at least k candidates; top-p: the candidates'
mass passes the nucleus' limit); a row whose guess falls short takes a safe one (the whole
row at worst; top-p draws such rows again, alone). Every quantity is computed per row, so a
row draws the same in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 64  # characters per block of the two-level inverse CDF
SAMPLE_SIZE = 384  # characters of a row sorted to suggest a threshold
TOP_K_SLACK = 2.0  # the threshold aims at this many times k candidates
TOP_K_EXTRA = 8  # ... and this many more sampled ranks (a few sampled values are noisy)
NUCLEUS_SLACK = 0.15  # ... and at the nucleus of top_p + this x (1 - top_p) in the sample
# Candidate weights (at most 1) become integers of 2**-FIXED_BITS: their cumulative sums are
# then exact (the same in any batch) and fast (numpy's float cumsum is ~7x slower).
FIXED_BITS = 40
SMALLEST_WEIGHT = float(np.finfo(np.float32).smallest_subnormal)
ONE = float(2**FIXED_BITS)


def full_blocks(values: np.ndarray) -> np.ndarray:
    """[rows, vocab // BLOCK, BLOCK]: the whole blocks of each row, a view (splitting the
    column axis never needs a copy)."""
    rows, vocab = values.shape
    return values[:, : vocab - vocab % BLOCK].reshape(rows, vocab // BLOCK, BLOCK)


def block_sums(weights: np.ndarray) -> np.ndarray:
    """[rows, ceil(vocab / BLOCK)] float32 sums of BLOCK consecutive columns, the last block
    maybe partial: einsum over a view, no copy (a block's sum is the same in any batch)."""
    rows, vocab = weights.shape
    full = vocab // BLOCK
    sums = np.empty((rows, -(-vocab // BLOCK)), dtype=np.float32)
    np.einsum("ijk->ij", full_blocks(weights), out=sums[:, :full])
    if full < sums.shape[1]:
        sums[:, full] = weights[:, full * BLOCK :].sum(axis=1)
    return sums


def blocked_choice(weights: np.ndarray, fraction: np.ndarray,
                   sums: np.ndarray | None = None) -> np.ndarray:
    """`inverse_cdf` without a cumulative sum across the vocabulary: the block is found on
    the cumulative block sums, then the character on that block's own cumulative sum (the
    first whose sum passes what the target leaves: it has weight, since the sum rises
    there). Rounding can leave the block's own sum short of what the target leaves: then its
    last character of weight is taken. `sums`: the block sums if known (softmax_blocks).
    Needs vocab >= BLOCK (sample() comes here above LARGE_VOCAB)."""
    rows, vocab = weights.shape
    cumulative = np.cumsum(block_sums(weights) if sums is None else sums, axis=1)
    total = cumulative[:, -1].astype(np.float64)
    target = np.minimum(fraction * total, np.nextafter(total, 0.0))  # below the last sum
    block = np.argmax(cumulative > target[:, None], axis=1)  # the first that passes it
    row = np.arange(rows)
    rest = target - np.where(block > 0, cumulative[row, block - 1], 0.0)
    full = vocab // BLOCK
    inside = full_blocks(weights)[row, np.minimum(block, full - 1)]
    if full < cumulative.shape[1]:  # the last block is short: its rows take its columns
        short_block = np.flatnonzero(block == full)
        if len(short_block):
            inside[short_block] = 0.0
            inside[short_block, : vocab - full * BLOCK] = weights[short_block, full * BLOCK :]
    passes = np.cumsum(inside, axis=1) > rest[:, None]
    within = np.argmax(passes, axis=1)
    none_passes = ~passes[row, within]
    if none_passes.any():
        within[none_passes] = BLOCK - 1 - (inside[none_passes, ::-1] > 0).argmax(axis=1)
    return block * BLOCK + within


def strided_sample(values: np.ndarray) -> np.ndarray:
    """About SAMPLE_SIZE values of each row, every stride-th, sorted (smallest first)."""
    stride = max(1, values.shape[1] // SAMPLE_SIZE)
    return np.sort(values[:, ::stride], axis=1)


def fixed_point(weights: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] as int64 multiples of 2**-FIXED_BITS."""
    return np.rint(weights * np.float32(ONE)).astype(np.int64)


def fixed_inverse_cdf(weights: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """`inverse_cdf` on fixed-point weights [rows, width]: the first column whose cumulative
    weight passes fraction x the row's total, never a column of weight 0."""
    cdf = np.cumsum(weights, axis=1)
    total = cdf[:, -1]
    target = np.minimum(np.floor(fraction * total).astype(np.int64), total - 1)
    return np.argmax(cdf > target[:, None], axis=1)


def keep_largest(weights: np.ndarray, fixed: np.ndarray,
                 limit: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nucleus rule on candidate weights [rows, width] in id order (float32 `weights`,
    and `fixed`, the same in fixed point): in order of weight (ties: lower id first), a
    weight is kept while the mass of those before it is at most the row's limit (in fixed
    point). Returns `fixed` with the weights not kept set to 0 (in place) and each row's
    total.

    In ascending order (sorted as float32; fixed_point is monotone) the mass before a
    weight is the row's total less the cumulative sum up to it, exact in integers, so the
    kept weights are those from the first whose cumulative sum reaches total - limit."""
    rows, width = fixed.shape
    ascending = fixed_point(np.sort(weights, axis=1))
    cumulative = np.cumsum(ascending, axis=1)
    total = cumulative[:, -1]
    need = np.ceil(total - limit).astype(np.int64)
    first = np.argmax(cumulative >= need[:, None], axis=1)  # the largest is always kept
    row = np.arange(rows)
    smallest = ascending[row, first]
    kept = fixed >= smallest[:, None]
    cut = (first > 0) & (ascending[row, np.maximum(first - 1, 0)] == smallest)
    if cut.any():  # rare: ties with the smallest kept weight, not all of them kept
        index = np.flatnonzero(cut)
        above = fixed[index] > smallest[index, None]
        tied = fixed[index] == smallest[index, None]
        room = width - first[index] - above.sum(axis=1)
        kept[index] = above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))
    return np.multiply(fixed, kept, out=fixed), total


@dataclass(frozen=True)
class Candidates:
    """Per row, the columns whose value is at least the row's threshold, in id order: their
    flat indices into [rows, vocab] (row r's are flat[starts[r] : starts[r] + counts[r]]),
    their values padded to the longest row ([rows, width]; `fill` where padded)."""

    flat: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    values: np.ndarray
    vocab: int

    @classmethod
    def above(cls, values: np.ndarray, threshold: np.ndarray, fill: float) -> Candidates:
        rows, vocab = values.shape
        flat = np.flatnonzero(values >= threshold[:, None])
        bounds = np.searchsorted(flat, np.arange(rows + 1) * vocab)
        starts, counts = bounds[:-1], np.diff(bounds)
        width = max(int(counts.max()), 1)
        padded = np.full(rows * width, fill, dtype=np.float32)
        slots = np.repeat(np.arange(rows) * width - starts, counts)
        slots += np.arange(len(flat))
        padded[slots] = values.ravel()[flat]
        return cls(flat, starts, counts, padded.reshape(rows, width), vocab)

    def ids(self, slots: np.ndarray) -> np.ndarray:
        """The columns at each row's candidate slot."""
        return self.flat[self.starts + slots] - np.arange(len(slots)) * self.vocab


def top_k_candidates(z: np.ndarray, k: int) -> Candidates:
    """Candidates (logits; -inf padding) holding the k largest logits of every row and all
    ties with the k-th: those at or above the sample's value of rank ~2k/stride + 8; a row with
    fewer than k of them takes the whole row (rare: a row flatter than its sample)."""
    sample = strided_sample(z)
    rank = int(np.ceil(TOP_K_SLACK * k * sample.shape[1] / z.shape[1])) + TOP_K_EXTRA
    threshold = (sample[:, sample.shape[1] - rank].copy() if rank <= sample.shape[1]
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
    ascending = np.sort(values, axis=1)
    width = ascending.shape[1]
    kth, top = ascending[:, width - k : width - k + 1], ascending[:, -1:]
    weights = np.subtract(values, top, dtype=np.float32)
    weights *= scale
    np.exp(weights, out=weights)
    weights[values < kth] = 0.0
    fixed = fixed_point(weights)
    if top_p is not None:
        fixed, _ = keep_largest(weights, fixed, top_p * fixed.sum(axis=1))
    return found.ids(fixed_inverse_cdf(fixed, fraction))


def nucleus_choice(probabilities: np.ndarray, top_p: float, fraction: np.ndarray,
                   vocab: int | None = None) -> np.ndarray:
    """Next ids under top-p from the probabilities [rows, columns] of the whole rows (each
    row sums to 1 within float32 rounding, so the nucleus' limit is top_p itself); `vocab`,
    the characters among the columns (the rest are padding of probability 0).

    The candidates are those at or above the sample's own nucleus at a slightly larger mass."""
    vocab = probabilities.shape[1] if vocab is None else vocab
    level = top_p + NUCLEUS_SLACK * (1.0 - top_p)
    return nucleus_above(probabilities, top_p, fraction, sample_nucleus(probabilities, level),
                         (1.0 - top_p) / vocab)


def sample_nucleus(probabilities: np.ndarray, level: float) -> np.ndarray:
    """Per row, the smallest value of the strided sample's own nucleus at `level` of the
    sample's mass (in ascending order: the first whose cumulative sum reaches 1 - level of
    it): a guess, checked by the caller."""
    sample = strided_sample(probabilities)
    mass = np.cumsum(fixed_point(sample), axis=1)
    first = np.argmax(mass >= (1.0 - level) * mass[:, -1:], axis=1)
    return sample[np.arange(len(probabilities)), first]


def nucleus_above(probabilities: np.ndarray, top_p: float, fraction: np.ndarray,
                  threshold: np.ndarray, bound: float, attempt: int = 0) -> np.ndarray:
    """Next ids under top-p with the candidates at or above each row's threshold. The rows
    whose candidates weigh no more than the limit (in fixed point, as the rule counts) draw
    again, alone, with a lower threshold: a quarter of theirs (not below `bound`), then
    `bound` = (1 - top_p) / vocab (the characters below it weigh less than 1 - top_p), and
    should rounding defeat that too, the smallest float32 (every character of weight)."""
    limit = top_p * ONE
    found = Candidates.above(probabilities, threshold, 0.0)
    kept, held = keep_largest(found.values, fixed_point(found.values), limit)
    ids = found.ids(fixed_inverse_cdf(kept, fraction))
    short = np.flatnonzero(held <= limit)
    if len(short) and attempt < 3:
        lower = [np.maximum(threshold[short] / 4, np.float32(bound)),
                 np.full(len(short), bound, dtype=np.float32),
                 np.full(len(short), SMALLEST_WEIGHT, dtype=np.float32)][attempt]
        ids[short] = nucleus_above(probabilities[short], top_p, fraction[short], lower, bound,
                                   attempt + 1)
    return ids
