"""Per-character log-probabilities for the rows that ask for them (the engine's `logprobs` and
`prompt_logprobs`, the OpenAI API's `logprobs` and `echo`).

The values are of the model's raw distribution: the log-softmax of the graph's logits, before
temperature, top-k/top-p or any logits processor (vLLM's default, "raw_logprobs"), so that a
character's log-probability is the same whatever sampling settings produced it, and the
prompt's equal `Model.score`. They are computed in float64 (as `Scorer` does), and only over the
rows that asked: a row without logprobs costs nothing more than before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arguments import integer

# Most alternatives per character a request may ask for: vLLM's default cap (OpenAI's is 5).
MAX_LOGPROBS = 20


@dataclass(frozen=True, slots=True)
class CharLogprob:
    """One character's log-probability under the model, given everything before it, and the
    `top` most likely characters at its position as (id, log-probability), best first.
    `logprob` is None for a text's first character, which nothing before it predicts."""

    id: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


def checked_count(value: object, name: str) -> int | None:
    """None (no logprobs) or how many alternatives to report, 0 to MAX_LOGPROBS."""
    if value is None:
        return None
    return integer(value, name, minimum=0, maximum=MAX_LOGPROBS)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def char_logprobs(logits: np.ndarray, ids: np.ndarray, tops: list[int]) -> list[CharLogprob]:
    """For rows of `logits` [n, vocab]: the log-probability of `ids[i]` and row i's `tops[i]`
    most likely characters, best first (ties: the lower id first)."""
    log_probs = log_softmax(logits)
    chosen = log_probs[np.arange(len(ids)), ids]
    widest = min(max(tops, default=0), log_probs.shape[-1])
    if widest:
        # argsort of the negated values is stable: equal log-probabilities keep id order
        best = np.argsort(-log_probs, axis=-1, kind="stable")[:, :widest]
        best_lp = np.take_along_axis(log_probs, best, axis=-1)
    entries = []
    for i, (char, lp, k) in enumerate(zip(ids.tolist(), chosen.tolist(), tops)):
        top = tuple(zip(best[i, :k].tolist(), best_lp[i, :k].tolist())) if k and widest else ()
        entries.append(CharLogprob(char, lp, top))
    return entries


def first_char(char: int) -> CharLogprob:
    """The entry of a text's first character: nothing predicts it."""
    return CharLogprob(char, None)
