"""Per-row logit adjustments the OpenAI and vLLM APIs define, inside the batched decode.

`Penalties` is one row's setting (checked once, frozen, hashable): OpenAI's
`frequency_penalty` and `presence_penalty` (over the characters the row has generated),
`logit_bias` (a constant added to chosen characters' logits), vLLM's `repetition_penalty`
(over the prompt and the generated characters: a positive logit is divided by it, a negative
one multiplied) and `min_p` (characters less likely than `min_p` times the most likely one,
after the temperature, are dropped). `PenaltyRows` holds, for the rows of a batch that use any
of them and for no other, what they need between steps (counts of generated characters, the
characters seen) and applies them to those rows' logits, vectorised. Rows without penalties
cost nothing: they are not in it, and a batch without such rows skips it entirely.

The order is vLLM's: logit_bias, then repetition, frequency and presence penalties, then the
temperature and min_p, then top-k and top-p (in `sampling.sample`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from .arguments import describe, is_integer, real
from .errors import InvalidArgumentError
from .sampling import TEMPERATURE_FLOOR

MAX_PENALTY = 2.0  # OpenAI's range for frequency_penalty and presence_penalty
MAX_BIAS = 100.0  # OpenAI's range for logit_bias values
MAX_REPETITION_PENALTY = 100.0  # far past any useful value; larger is surely a mistake


class PenaltyArguments(TypedDict, total=False):
    """The keyword arguments of `Model.generate`, `stream`, `generator` and `Engine.submit`
    that adjust the logits (None or the default: off).

    - frequency_penalty (-2..2, OpenAI): logit -= count x penalty, count = how often the
      character occurs in what this row has generated;
    - presence_penalty (-2..2, OpenAI): logit -= penalty for every character generated once;
    - repetition_penalty (> 0, vLLM; 1 = off): over the prompt and the generated characters,
      a positive logit is divided by it and a negative one multiplied;
    - min_p (0..1, vLLM): drop characters whose probability (after the temperature) is below
      min_p x the most likely one's;
    - logit_bias ({character id or character: -100..100}, OpenAI): added to the logits.
    """

    frequency_penalty: float | None
    presence_penalty: float | None
    repetition_penalty: float | None
    min_p: float | None
    logit_bias: Mapping[int | str, float] | None


@dataclass(frozen=True)
class Penalties:
    """One row's adjustments; the defaults change nothing (`active` is False)."""

    frequency: float = 0.0
    presence: float = 0.0
    repetition: float = 1.0
    min_p: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (character id, bias), ids ascending

    @property
    def active(self) -> bool:
        return bool(self.frequency or self.presence or self.repetition != 1.0 or self.min_p
                    or self.logit_bias)

    def given(self) -> dict[str, bool]:
        """Which of the arguments are set (by their argument names)."""
        return {"frequency_penalty": bool(self.frequency), "presence_penalty": bool(self.presence),
                "repetition_penalty": self.repetition != 1.0, "min_p": bool(self.min_p),
                "logit_bias": bool(self.logit_bias)}

    @classmethod
    def checked(cls, vocab_size: int, index: Mapping[str, int], *,
                frequency_penalty: object = 0.0, presence_penalty: object = 0.0,
                repetition_penalty: object = 1.0, min_p: object = None,
                logit_bias: object = None) -> Penalties:
        """Each argument checked, naming it in the error; None means "off" throughout."""
        return cls(
            _or(frequency_penalty, 0.0, lambda v: real(v, "frequency_penalty",
                                                       minimum=-MAX_PENALTY, maximum=MAX_PENALTY)),
            _or(presence_penalty, 0.0, lambda v: real(v, "presence_penalty",
                                                      minimum=-MAX_PENALTY, maximum=MAX_PENALTY)),
            _or(repetition_penalty, 1.0, lambda v: real(v, "repetition_penalty", above=0.0,
                                                        maximum=MAX_REPETITION_PENALTY)),
            _or(min_p, 0.0, lambda v: real(v, "min_p", minimum=0.0, maximum=1.0)),
            check_logit_bias(logit_bias, vocab_size, index))


def _or(value: object, off: float, check: object) -> float:
    return off if value is None else check(value)  # type: ignore[operator]


def check_logit_bias(bias: object, vocab_size: int, index: Mapping[str, int]
                     ) -> tuple[tuple[int, float], ...]:
    """{key: bias} with keys character ids (ints, 0 <= id < vocab) or single characters of
    the vocabulary, values in [-100, 100]; every bad key is named in one error."""
    if bias is None:
        return ()
    if not isinstance(bias, Mapping):
        raise InvalidArgumentError(f"logit_bias must be a mapping of character id (or "
                                   f"character) to bias, got {describe(bias)}",
                                   param="logit_bias")
    ids: dict[int, float] = {}
    bad: list[str] = []
    for key, value in bias.items():
        if is_integer(key) and 0 <= int(key) < vocab_size:
            ident = int(key)
        elif isinstance(key, str) and key in index:
            ident = index[key]
        else:
            bad.append(describe(key, 20))
            continue
        ids[ident] = real(value, f"logit_bias[{describe(key, 20)}]", minimum=-MAX_BIAS,
                          maximum=MAX_BIAS)
    if bad:
        raise InvalidArgumentError(
            f"logit_bias keys must be character ids 0..{vocab_size - 1} (or characters of the "
            f"vocabulary); not one: {', '.join(bad[:10])}", param="logit_bias")
    return tuple(sorted((i, b) for i, b in ids.items() if b))


NO_PENALTIES = Penalties()


class PenaltyRows:
    """The rows of a batch that use penalties: their positions in the batch and, in the same
    order, their settings as arrays and their state (what they have generated and seen).
    Positions follow the batch as rows join and leave (`join`, `keep`)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.positions = np.zeros(0, np.int64)
        self.counts = np.zeros((0, vocab_size), np.float32)  # generated, per character
        self.seen = np.zeros((0, vocab_size), bool)  # prompt or generated
        self.frequency = np.zeros(0, np.float32)
        self.presence = np.zeros(0, np.float32)
        self.repetition = np.ones(0, np.float32)
        self.bias = np.zeros((0, vocab_size), np.float32)
        self.min_gap = np.zeros(0, np.float32)  # temperature x ln(min_p); -inf: off
        self._refresh()

    def __len__(self) -> int:
        return len(self.positions)

    def join(self, first: int, penalties: Sequence[Penalties], temperatures: Sequence[float],
             prompts: Sequence[np.ndarray] | None) -> None:
        """Rows appended to the batch at positions first, first + 1, ...; those with active
        penalties join (their prompt's characters count as seen for repetition_penalty)."""
        chosen = [i for i, p in enumerate(penalties) if p.active]
        if not chosen:
            return
        vocab = self.vocab_size
        seen = np.zeros((len(chosen), vocab), bool)
        bias = np.zeros((len(chosen), vocab), np.float32)
        for k, i in enumerate(chosen):
            if prompts is not None:
                seen[k, prompts[i]] = True
            for ident, value in penalties[i].logit_bias:
                bias[k, ident] = value
        rows = [penalties[i] for i in chosen]
        self.positions = np.concatenate([self.positions, first + np.array(chosen, np.int64)])
        self.counts = np.concatenate([self.counts, np.zeros((len(chosen), vocab), np.float32)])
        self.seen = np.concatenate([self.seen, seen])
        self.bias = np.concatenate([self.bias, bias])
        self.frequency = np.append(self.frequency, [p.frequency for p in rows]).astype(np.float32)
        self.presence = np.append(self.presence, [p.presence for p in rows]).astype(np.float32)
        self.repetition = np.append(self.repetition, [p.repetition for p in rows]
                                    ).astype(np.float32)
        gaps = [min_gap(p.min_p, temperatures[i]) for p, i in zip(rows, chosen)]
        self.min_gap = np.append(self.min_gap, gaps).astype(np.float32)
        self._refresh()

    def keep(self, index: np.ndarray, count: int) -> None:
        """The batch (of `count` rows) keeps only the rows at `index`, in that order."""
        if not len(self.positions):
            return
        new = np.full(count, -1, np.int64)
        new[index] = np.arange(len(index))
        moved = new[self.positions]
        alive = np.flatnonzero(moved >= 0)
        self.positions = moved[alive]
        for name in ("counts", "seen", "bias", "frequency", "presence", "repetition",
                     "min_gap"):
            setattr(self, name, getattr(self, name)[alive])
        self._refresh()

    def _refresh(self) -> None:
        """Which adjustments any row uses: the others are skipped every step."""
        self.use_bias = bool(self.bias.any())
        self.use_repetition = bool((self.repetition != 1.0).any())
        self.use_counts = bool(self.frequency.any() or self.presence.any())
        self.use_min_p = bool(np.isfinite(self.min_gap).any())

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """`logits` [batch, vocab] with the penalised rows adjusted (a new array)."""
        rows = self.positions
        z = logits[rows].astype(np.float32, copy=False)  # fancy indexing: a copy
        if self.use_bias:
            z += self.bias
        if self.use_repetition:
            factor = np.where(self.seen, self.repetition[:, None], np.float32(1.0))
            z = np.where(z > 0, z / factor, z * factor)
        if self.use_counts:
            z -= self.counts * self.frequency[:, None] + (self.counts > 0) * self.presence[:, None]
        if self.use_min_p:
            floor = z.max(axis=1) + self.min_gap
            z[z < floor[:, None]] = -np.inf
        out = np.array(logits, dtype=np.float32, copy=True)
        out[rows] = z
        return out

    def record(self, ids: np.ndarray) -> None:
        """The ids the whole batch just sampled: the penalised rows count theirs."""
        mine = ids[self.positions]
        here = np.arange(len(mine))
        self.counts[here, mine] += 1
        self.seen[here, mine] = True


def min_gap(min_p: float, temperature: float) -> float:
    """How far below the top logit a character may be and stay: with probabilities
    softmax(z / T), p / p_max >= min_p is z >= z_max + T ln(min_p). Off (-inf) without min_p
    or when greedy (the top character is always kept)."""
    if min_p <= 0.0 or temperature < TEMPERATURE_FLOOR:
        return -math.inf
    return temperature * math.log(min_p)
