"""Where a fine-tuned model came from: its parent and the characters it added."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .records import dataclass_from_json


@dataclass(frozen=True)
class Lineage:
    """What a fine-tuned run records about its parent: in run.json, every checkpoint, and the
    exported manifest (provenance.parent) and model card."""

    name: str
    kind: str
    sha256: str
    location: str
    vocab_size: int  # the parent's; ids below it are the parent's characters
    added_characters: list[str]
    new_row_bias: float | None = None  # where the added characters' output biases started

    def validate(self) -> None:
        if self.kind not in ("artifact", "run"):
            raise UsageError(f"field 'kind' must be artifact or run, got {self.kind!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise UsageError(f"field 'sha256' must be 64 hex digits, got {self.sha256!r}")
        if any(len(c) != 1 for c in self.added_characters):
            raise UsageError("field 'added_characters' must hold single characters")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, record: Any, where: str) -> Lineage | None:
        return None if record is None else dataclass_from_json(cls, record, where)

    def describe(self) -> str:
        added = ("no characters added" if not self.added_characters else
                 f"{len(self.added_characters)} character(s) added: "
                 + " ".join(repr(c) for c in self.added_characters))
        start = ("" if self.new_row_bias is None else
                 f" (their output bias starts at {self.new_row_bias:.2f}: the old characters' "
                 "predictions are the parent's at step 0)")
        return (f"fine-tuning from {self.name} ({self.kind} {self.location}, weights sha256 "
                f"{self.sha256[:16]}…): {added}{start}")
