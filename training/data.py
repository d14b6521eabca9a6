"""The data path: one integer tensor per split, random windows gathered by tensor indexing.

The tutorial this project grew from built one-hot batches in Python loops and spent hours per
epoch there; here a batch is one `randint` and one gather, so the model is the bottleneck.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .errors import UsageError

BUNDLED_CORPUS = "tinyshakespeare.txt"


def read_corpus(path: Path | None) -> tuple[str, str]:
    """Return (text, name); with no path, the bundled tinyshakespeare corpus."""
    if path is None:
        blob = resources.files("bard.training").joinpath("corpus", BUNDLED_CORPUS + ".gz")
        return gzip.decompress(blob.read_bytes()).decode("utf-8"), BUNDLED_CORPUS
    if not path.exists():
        raise UsageError(f"corpus file not found: {path}")
    if not path.is_file():
        raise UsageError(f"corpus path is not a file: {path}")
    raw = path.read_bytes()
    if not raw:
        raise UsageError(f"corpus file is empty: {path}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"corpus file is not valid UTF-8: {path} (byte offset {err.start})"
        ) from None
    return text, path.name


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Vocabulary:
    """The sorted set of a corpus's characters; a character's id is its index."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        index = {ch: i for i, ch in enumerate(self.chars)}
        missing = sorted(set(text) - index.keys())
        if missing:
            raise UsageError(f"text has characters outside the vocabulary: {missing!r}")
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@dataclass(frozen=True)
class Splits:
    """Train and validation token tensors: first (1 - val_fraction) train, the rest validation."""

    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def from_tokens(cls, tokens: torch.Tensor, val_fraction: float, seq_len: int) -> Splits:
        cut = int(len(tokens) * (1.0 - val_fraction))
        train, val = tokens[:cut], tokens[cut:]
        if len(train) < seq_len + 1:
            raise UsageError(
                f"corpus too short: the training split has {len(train)} characters, "
                f"fewer than one window of {seq_len + 1} (lower --seq-len or use more text)"
            )
        if len(val) < 2:
            raise UsageError(
                f"corpus too short: the validation split has {len(val)} characters "
                "(need at least 2; raise --val-fraction or use more text)"
            )
        return cls(train=train, val=val)


def sample_batch(
    data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows by one vectorised gather; targets are the inputs shifted by one."""
    starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)
    windows = data[starts[:, None] + torch.arange(seq_len + 1)]
    return windows[:, :-1], windows[:, 1:]


def split_streams(data: torch.Tensor, num_streams: int) -> list[torch.Tensor]:
    """Cut text into contiguous streams, each evaluated with its state carried from its start.

    The cut depends only on the text and the stream count, so any number of processes that
    share the streams out reproduce the single-process loss exactly.
    """
    num_streams = max(1, min(num_streams, len(data) // 2))
    bounds = torch.linspace(0, len(data), num_streams + 1).long().tolist()
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b - a >= 2]
