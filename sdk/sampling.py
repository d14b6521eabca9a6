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
    with one uniform per row (`u`, unused when greedy)."""
    if params.greedy or u is None:
        return logits.argmax(axis=1)
    z = logits.astype(np.float64) / params.temperature
    if params.top_k is not None and params.top_k < z.shape[1]:
        kth = np.partition(z, -params.top_k, axis=1)[:, -params.top_k, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    if params.top_p is not None and params.top_p < 1.0:
        order = np.argsort(-p, axis=1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=1)
        before = np.cumsum(sorted_p, axis=1) - sorted_p
        drop = before > params.top_p * sorted_p.sum(axis=1, keepdims=True)
        np.put_along_axis(p, order, np.where(drop, 0.0, sorted_p), axis=1)
    cdf = np.cumsum(p, axis=1)
    chosen = (cdf <= (u * cdf[:, -1])[:, None]).sum(axis=1)
    return np.minimum(chosen, logits.shape[1] - 1)
