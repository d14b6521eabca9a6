"""Validation loss over whole texts, with the LSTM state carried from each stream's start."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import CharLSTM

EVAL_CHUNK = 512


@torch.inference_mode()
def stream_nll(
    model: CharLSTM, streams: list[torch.Tensor], device: torch.device, chunk: int = EVAL_CHUNK
) -> tuple[float, int]:
    """Sum of next-character negative log-likelihoods (nats) over streams, and their count.

    The streams run side by side as one batch, padded at the end; padding only follows real
    characters, so it never changes a real prediction, and it is masked out of the sum.
    """
    if not streams:
        return 0.0, 0
    was_training = model.training
    model.eval()
    longest = max(len(s) for s in streams)
    padded = torch.zeros(len(streams), longest, dtype=torch.long)
    mask = torch.zeros(len(streams), longest - 1, dtype=torch.bool)
    for row, stream in enumerate(streams):
        padded[row, : len(stream)] = stream
        mask[row, : len(stream) - 1] = True
    padded, mask = padded.to(device), mask.to(device)
    state = model.zero_state(len(streams), device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, longest - 1, chunk):
        inputs = padded[:, start : start + chunk]
        targets = padded[:, start + 1 : start + chunk + 1]
        inputs = inputs[:, : targets.shape[1]]
        logits, state = model(inputs, state)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        total += nll.masked_select(mask[:, start : start + targets.shape[1]]).double().sum()
    model.train(was_training)
    return float(total), int(mask.sum())


def bits_per_char(nats: float) -> float:
    return nats / math.log(2)
