"""Scoring a text of any size: read as UTF-8 in pieces, fed in chunks with the state carried.

Memory follows the piece and the chunk, never the text: a 1 GB file costs what a 1 MB one
does. `Scorer` holds the running total; `score_stream` drives it over a binary stream (a file,
standard input) and reports progress between pieces, where a KeyboardInterrupt may stop it.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import numpy as np

from .errors import InvalidArgumentError, UnknownCharacterError
from .runtime import Runner
from .vocab import OnUnknown, Vocabulary


class ScoringModel(Protocol):
    """What scoring needs of a `bard_sdk.Model` (a Protocol: no import of model.py, which
    imports this module)."""

    runner: Runner
    vocab: Vocabulary

    def zero_state(self, rows: int) -> tuple[np.ndarray, np.ndarray]: ...

    def encode(self, text: str, on_unknown: OnUnknown = "error",
               replacement: str | None = None) -> np.ndarray: ...

SCORE_CHUNK = 4096  # characters per graph call, at most
CHUNK_LOGITS = 1 << 22  # and at most this many logits (16 MB) per call, for large alphabets
TEXT_PIECE = 1 << 16  # bytes read at a time


@dataclass(frozen=True)
class Score:
    """Log-likelihood of a text under the model, predicting each character from the ones
    before it (the first character has no prediction)."""

    total_nats: float
    characters: int

    @property
    def nats_per_char(self) -> float:
        return self.total_nats / self.characters if self.characters else math.nan

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)


class Scorer:
    """A running log-likelihood from the zero state: feed ids piece by piece, read `score`.
    Feeding a text whole or in any pieces gives the same total (to float rounding)."""

    def __init__(self, model: ScoringModel) -> None:
        self._runner = model.runner
        self._state = self._runner.state(*model.zero_state(1))
        self._chunk = max(1, min(SCORE_CHUNK, CHUNK_LOGITS // len(model.vocab)))
        self._last: np.ndarray | None = None  # the previous piece's last id, not yet fed
        self.total_nats = 0.0
        self.characters = 0

    @property
    def score(self) -> Score:
        return Score(self.total_nats, self.characters)

    def feed(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        ids = ids if self._last is None else np.concatenate([self._last, ids])
        for start in range(0, len(ids) - 1, self._chunk):
            chunk = ids[start : start + self._chunk + 1]
            logits, self._state = self._runner.step(chunk[None, :-1], self._state)
            z = logits[0].astype(np.float64)
            z -= z.max(axis=1, keepdims=True)
            log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            self.total_nats -= float(log_probs[np.arange(len(chunk) - 1), chunk[1:]].sum())
            self.characters += len(chunk) - 1
        self._last = ids[-1:]


def count_characters(stream: BinaryIO) -> int:
    """Characters in UTF-8 bytes (those that are not continuation bytes), one read pass."""
    count = 0
    while block := stream.read(1 << 20):
        data = np.frombuffer(block, dtype=np.uint8)
        count += len(data) - int(np.count_nonzero((data & 0xC0) == 0x80))
    return count


def score_stream(model: ScoringModel, stream: BinaryIO, *, on_unknown: OnUnknown = "error",
                 replacement: str | None = None, start: int = 0, end: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Score:
    """The score of characters [start, end) of UTF-8 `stream` (end None: to its end), read
    TEXT_PIECE bytes at a time. `progress(characters read)` is called after each piece.
    Invalid UTF-8 and (with on_unknown="error") unknown characters raise at the first piece
    that holds them, naming the byte offset or character position in the whole text."""
    model.encode("", on_unknown, replacement)  # the policy is checked before any reading
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    scorer, position, consumed = Scorer(model), 0, 0
    while True:
        block = stream.read(TEXT_PIECE)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as err:
            raise InvalidArgumentError(f"the text is not valid UTF-8 (byte offset "
                                       f"{consumed - pending + err.start})") from None
        consumed += len(block)
        lo, hi = max(start - position, 0), len(text) if end is None else max(end - position, 0)
        if lo < hi and lo < len(text):
            scorer.feed(encode_piece(model, text[lo:hi], position + lo, on_unknown,
                                     replacement))
        position += len(text)
        if progress is not None:
            progress(position)
        if not block or (end is not None and position >= end):
            return scorer.score


def encode_piece(model: ScoringModel, text: str, offset: int, on_unknown: OnUnknown,
                 replacement: str | None) -> np.ndarray:
    try:
        return model.encode(text, on_unknown, replacement)
    except UnknownCharacterError as err:
        found = [(offset + p, text[p]) for p in err.positions]
        raise UnknownCharacterError(found, len(found), more_may_follow=True) from None
