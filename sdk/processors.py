"""Two logits processors users ask for; any `(step, ids, logits) -> logits` callable works.

Both are vectorised over the rows and leave rows independent, so a batch still equals its
rows generated alone.
"""

from __future__ import annotations

import numpy as np

from .arguments import integer, real, string
from .errors import InvalidArgumentError
from .vocab import Vocabulary


class RepetitionPenalty:
    """Make characters a row produced recently less likely (the CTRL rule: a positive logit
    is divided by `penalty`, a negative one multiplied), over its last `window` characters.
    A character model repeats letters all the time, so the window matters: 1.2-1.5 over
    8-32 characters curbs loops ("the the the") without garbling words."""

    def __init__(self, penalty: float = 1.3, window: int = 16) -> None:
        self.penalty = real(penalty, "penalty", minimum=1.0)
        self.window = integer(window, "window", minimum=1)

    def __call__(self, step: int, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if not ids.shape[1]:
            return logits
        lengths = (ids >= 0).sum(axis=1)  # ids are -1 after a row's end
        first = max(0, int(lengths.min()) - self.window)
        recent = ids[:, first:]
        column = np.arange(first, first + recent.shape[1])
        inside = (column >= (lengths - self.window)[:, None]) & (recent >= 0)
        rows = np.broadcast_to(np.arange(len(ids))[:, None], recent.shape)
        seen = np.zeros(logits.shape, dtype=bool)
        seen[rows[inside], recent[inside]] = True
        penalised = np.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return np.where(seen, penalised, logits)


class BanCharacters:
    """Never produce these characters (their logits become -inf)."""

    def __init__(self, vocab: Vocabulary, characters: str) -> None:
        string(characters, "characters")
        unknown = sorted({ch for ch in characters if ch not in vocab})
        if unknown:
            raise InvalidArgumentError(f"cannot ban characters the model does not have: "
                                       f"{', '.join(map(repr, unknown[:10]))}")
        self.ids = np.array(sorted({vocab.index[ch] for ch in characters}), dtype=np.int64)
        if len(self.ids) >= len(vocab):
            raise InvalidArgumentError("cannot ban every character of the vocabulary")

    def __call__(self, step: int, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        logits[:, self.ids] = -np.inf
        return logits
