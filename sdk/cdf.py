"""The inverse CDF every sampling path ends in, and float32 sampling weights."""

from __future__ import annotations

import numpy as np


def weights_of(values: np.ndarray, top: np.ndarray, scale: np.float32) -> np.ndarray:
    """exp((values - top) * scale) in float32, in a new array (-inf values weigh 0)."""
    weights = np.subtract(values, top, dtype=np.float32)
    weights *= scale
    return np.exp(weights, out=weights)


def inverse_cdf(weights: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Per row, the first column whose cumulative weight exceeds fraction x the row's total:
    never a column of weight 0 (the target stays below the total). The cumulative sum is
    sequential, so trailing zero columns (padding) change nothing."""
    cdf = np.cumsum(weights, axis=1)
    target = fraction * cdf[:, -1]
    chosen = (cdf <= target[:, None]).sum(axis=1)
    return np.minimum(chosen, weights.shape[1] - 1)
