"""Text that came from an artifact, made safe to print on a terminal."""

from __future__ import annotations


def printable(text: str, limit: int = 200) -> str:
    """`text` with control, format (bidi, zero-width) and other non-printing characters escaped
    (`\\x1b`, `\\u202e`) and shortened to at most `limit` characters: a manifest must not be
    able to drive the user's terminal or flood it."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
