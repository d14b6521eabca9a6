"""The data path: token ids in a memory-mapped file, random windows gathered per batch.

The tutorial this project grew from built one-hot batches in Python loops and spent hours per
epoch there; here a batch is one `randint` and one gather of just its windows from the token
file, so the model is the bottleneck and memory does not grow with the corpus.
"""

from __future__ import annotations

import itertools
import mmap
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UsageError


def split_point(length: int, val_fraction: float, seq_len: int = 1) -> int:
    """Where validation starts: the first (1 - val_fraction) of the corpus trains."""
    cut = int(length * (1.0 - val_fraction))
    if cut < seq_len + 1:
        raise UsageError(
            f"corpus too short: the training split has {cut} characters, "
            f"fewer than one window of {seq_len + 1} (lower --seq-len or use more text)"
        )
    if length - cut < 2:
        raise UsageError(
            f"corpus too short: the validation split has {length - cut} characters "
            "(need at least 2; raise --val-fraction or use more text)"
        )
    return cut


@dataclass(frozen=True)
class Splits:
    """Train and validation ids (views of one array): first (1 - val_fraction) train."""

    train: np.ndarray
    val: np.ndarray

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, val_fraction: float, seq_len: int) -> Splits:
        cut = split_point(len(tokens), val_fraction, seq_len)
        return cls(train=tokens[:cut], val=tokens[cut:])


def release_pages(data: np.ndarray) -> None:
    """Unmap the pages a read of memory-mapped `data` touched, from this process only: they
    stay in the page cache (shared with the other ranks) and fault back in when read again.

    Without this, resident memory grows with every window read: on kernels that cache files
    in large folios (2 MB here) one read maps a whole folio, and 20 steps of random windows
    map most of a 1 GB token file. A no-op for an array that is not a memory map."""
    base = data
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, mmap.mmap):
        base.madvise(mmap.MADV_DONTNEED)


def sample_batch(
    data: np.ndarray, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows gathered by one vectorised index (just those windows are read from the
    token file); targets are the inputs shifted by one."""
    starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)
    windows = data[starts.numpy()[:, None] + np.arange(seq_len + 1)]
    release_pages(data)
    tokens = torch.from_numpy(windows.astype(np.int64))
    return tokens[:, :-1], tokens[:, 1:]


def eval_spans(length: int, num_streams: int,
               max_chars: int | None = None) -> list[tuple[int, int]]:
    """Contiguous streams of a validation split of `length` characters, as (start, end).

    Each stream is evaluated with its state carried from its start. Without a budget (or when
    the split fits in it) the streams tile the whole split; otherwise they are `num_streams`
    evenly spaced windows holding `max_chars` characters in all. The result depends only on
    these numbers, so any number of processes sharing the streams out reproduces the
    single-process loss exactly, and every evaluation of a run sees the same characters.
    """
    num_streams = max(1, min(num_streams, length // 2))
    if max_chars is None or length <= max_chars:
        bounds = [i * length // num_streams for i in range(num_streams + 1)]
        spans = list(itertools.pairwise(bounds))
    else:
        span = max(2, max_chars // num_streams)
        last = max(num_streams - 1, 1)
        spans = [(s, s + span) for s in
                 (i * (length - span) // last for i in range(num_streams))]
    return [(a, b) for a, b in spans if b - a >= 2]
