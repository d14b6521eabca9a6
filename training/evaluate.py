"""Validation loss over contiguous streams, with the LSTM state carried from each stream's start.

The streams are read from the token file chunk by chunk, so memory follows the chunk, not the
split; between chunks the caller may ask to stop (a signal), and the evaluation is abandoned.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .data import release_pages
from .model import CharLSTM

EVAL_CHUNK = 512


@torch.inference_mode()
def stream_nll(
    model: CharLSTM, data: np.ndarray, spans: list[tuple[int, int]], device: torch.device,
    *, longest: int | None = None, stop: Callable[[], bool] | None = None,
    chunk: int = EVAL_CHUNK,
) -> tuple[float, int] | None:
    """Sum of next-character negative log-likelihoods (nats) over the spans of `data`, and
    their count; None if `stop()` said so between two chunks.

    The streams run side by side as one batch; a stream that ends early is padded, which only
    follows its real characters, so it never changes a real prediction, and it is masked out of
    the sum. `longest` (the longest span over all processes) makes every process run the same
    number of chunks, so `stop` may be a collective.
    """
    longest = longest if longest is not None else max((b - a for a, b in spans), default=0)
    was_training = model.training
    model.eval()
    state = model.zero_state(len(spans), device) if spans else None
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for start in range(0, longest - 1, chunk):
            if stop is not None and stop():
                return None
            if not spans:
                continue
            width = min(chunk, longest - 1 - start)
            window = np.zeros((len(spans), width + 1), dtype=np.int64)
            mask = np.zeros((len(spans), width), dtype=bool)
            for row, (a, b) in enumerate(spans):
                piece = data[min(b, a + start) : min(b, a + start + width + 1)]
                window[row, : len(piece)] = piece
                mask[row, : max(len(piece) - 1, 0)] = True
            release_pages(data)
            tokens = torch.from_numpy(window).to(device)
            nll, state = model(tokens[:, :-1], state, targets=tokens[:, 1:])
            total += nll.masked_select(torch.from_numpy(mask).to(device)).double().sum()
            count += int(mask.sum())
    finally:
        model.train(was_training)
    return float(total), count


def bits_per_char(nats: float) -> float:
    return nats / math.log(2)
