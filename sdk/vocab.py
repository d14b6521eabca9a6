"""Characters <-> ids, with an explicit policy for characters the model never saw."""

from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import InvalidArgumentError, UnknownCharacterError

OnUnknown = Literal["error", "skip", "replace"]


class Vocabulary:
    """A manifest's vocabulary: character id = index. Encoding is one numpy lookup."""

    def __init__(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        self._decode_table = np.array(self.chars, dtype=object)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: object) -> bool:
        return ch in self.index

    def encode(self, text: str, on_unknown: OnUnknown = "error",
               replacement: str | None = None) -> np.ndarray:
        """Ids of `text` as int64; unknown characters raise, are skipped, or are replaced."""
        if on_unknown not in ("error", "skip", "replace"):
            raise InvalidArgumentError(
                f"on_unknown must be 'error', 'skip' or 'replace', got {on_unknown!r}")
        replacement_id = -1
        if on_unknown == "replace":
            if not isinstance(replacement, str) or replacement not in self.index:
                raise InvalidArgumentError(
                    f"on_unknown='replace' needs a replacement character from the vocabulary, "
                    f"got {replacement!r}")
            replacement_id = self.index[replacement]
        ids = np.fromiter((self.index.get(ch, -1) for ch in text), dtype=np.int64, count=len(text))
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            if on_unknown == "error":
                raise UnknownCharacterError([(int(p), text[p]) for p in unknown[:10]],
                                            int(unknown.size))
            if on_unknown == "skip":
                return ids[ids >= 0]
            ids[unknown] = replacement_id
        return ids

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return "".join(self._decode_table[np.asarray(ids, dtype=np.int64)])
