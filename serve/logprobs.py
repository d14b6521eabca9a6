"""OpenAI's legacy completions `logprobs` object from the engine's per-character entries.

    {"tokens": ["R", "O"], "token_logprobs": [null, -1.2], "top_logprobs": [null, {"O": -1.2}],
     "text_offset": [0, 1]}

A token is a character. `top_logprobs` holds the `logprobs` likeliest characters and always the
one in the text (so up to logprobs + 1 entries, as OpenAI and vLLM do); a text's first
character with `echo` has null for both (nothing predicts it). `text_offset` is each
character's offset in the choice's text, counted across a stream's chunks (as vLLM does). The
values are of the model's raw distribution (sdk/logprobs.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bard_sdk.logprobs import CharLogprob


def top_dict(entry: CharLogprob, chars: Sequence[str]) -> dict[str, float] | None:
    if entry.logprob is None:
        return None
    top = {chars[i]: lp for i, lp in entry.top}
    top.setdefault(chars[entry.id], entry.logprob)
    return top


def legacy_logprobs(entries: Sequence[CharLogprob], chars: Sequence[str],
                    offset: int = 0) -> dict[str, Any]:
    """The logprobs object of characters whose first is at `offset` in the choice's text."""
    return {"tokens": [chars[e.id] for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [top_dict(e, chars) for e in entries],
            "text_offset": list(range(offset, offset + len(entries)))}


class LogprobCursor:
    """A streamed choice's entries, in order: the prompt's (with echo) then each piece's."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = chars
        self.pending: list[CharLogprob] = []
        self.offset = 0  # characters of the choice's text already described

    def add(self, entries: list[CharLogprob]) -> None:
        self.pending += entries

    def take(self, count: int) -> dict[str, Any]:
        """The logprobs object of the next `count` characters of the choice's text."""
        taken, self.pending = self.pending[:count], self.pending[count:]
        body = legacy_logprobs(taken, self.chars, self.offset)
        self.offset += count
        return body
