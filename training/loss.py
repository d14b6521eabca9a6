"""The training objective: cross-entropy on logits, plus AWD-LSTM's activation penalties.

The cross-entropy is computed a slice of positions at a time (`nll_in_chunks`), so the
[batch, time, vocab] logits never exist at once: with a large alphabet (a Chinese corpus has
thousands of characters) they would be most of a run's memory. While training each slice is
recomputed in the backward pass (activation checkpointing), so only one slice's logits live at
a time there too; the gradients are those of the whole tensor, summed in another order.

AR penalises large outputs of the last layer (after dropout, as the head sees them); TAR
penalises their change from one character to the next (before dropout), which favours a
smoothly evolving state. Both are zero unless asked for, and neither touches evaluation: the
validation loss is always the plain cross-entropy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import TrainConfig


class Outputs(NamedTuple):
    """The last LSTM layer's outputs, which AR/TAR regularise (CharLSTM returns them)."""

    raw: torch.Tensor  # [batch, time, hidden]: the last LSTM layer's outputs
    dropped: torch.Tensor  # the same after output dropout (what the head sees)

# Logit values per slice: 4M floats (16 MB), far above batch x time x vocab of a 65-character
# model, whose loss is therefore one plain call, as before chunking existed.
CHUNK_LOGITS = 1 << 22


def _slice_nll(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits.float(), targets, reduction="none")


def nll_in_chunks(hidden: torch.Tensor, head: nn.Linear, targets: torch.Tensor,
                  chunk_logits: int = CHUNK_LOGITS) -> torch.Tensor:
    """Per-position negative log-likelihood (nats, float32) of `targets` [...] under
    head(hidden [..., features]), in slices of at most `chunk_logits` logit values."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    wanted = targets.reshape(-1)
    rows = max(1, chunk_logits // head.out_features)
    if rows >= len(flat):
        return _slice_nll(flat, head.weight, head.bias, wanted).reshape(targets.shape)
    recompute = torch.is_grad_enabled() and flat.requires_grad
    pieces = []
    for start in range(0, len(flat), rows):
        args = (flat[start : start + rows], head.weight, head.bias, wanted[start : start + rows])
        pieces.append(checkpoint(_slice_nll, *args, use_reentrant=False) if recompute
                      else _slice_nll(*args))
    return torch.cat(pieces).reshape(targets.shape)


def training_loss(nll: torch.Tensor, outputs: Outputs,
                  config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(what to minimise, the cross-entropy alone: what the log reports), from the
    per-position losses the model returns when given targets."""
    cross_entropy = nll.mean()
    total = cross_entropy
    if config.activation_reg > 0:
        total = total + config.activation_reg * outputs.dropped.float().pow(2).mean()
    if config.temporal_activation_reg > 0:
        change = outputs.raw[:, 1:] - outputs.raw[:, :-1]
        total = total + config.temporal_activation_reg * change.float().pow(2).mean()
    return total, cross_entropy
