"""A prompt taken from the corpus itself, for the parity gate and the model card's samples.

A constant prompt ("ROMEO:") fails on every corpus that lacks its characters (lowercase text,
Russian, Chinese, a two-symbol corpus); text from the validation split is always in the
vocabulary, and it reads like what the model was trained on.
"""

from __future__ import annotations

PROMPT_CHARS = 32
SOURCE_CHARS = 4096  # how much of the validation split's start to look at


def corpus_prompt(text: str) -> str:
    """The first non-blank line after the first line break (the validation split may start
    mid-line), clipped to PROMPT_CHARS; without one, the first PROMPT_CHARS characters."""
    _, newline, rest = text.partition("\n")
    if newline:
        for line in rest.split("\n"):
            line = line.rstrip("\r")
            if line.strip():
                return line[:PROMPT_CHARS]
    return text[:PROMPT_CHARS]
