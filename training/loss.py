"""The training objective: cross-entropy on logits, plus AWD-LSTM's activation penalties.

AR penalises large outputs of the last layer (after dropout, as the head sees them); TAR
penalises their change from one character to the next (before dropout), which favours a
smoothly evolving state. Both are zero unless asked for, and neither touches evaluation: the
validation loss is always the plain cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .model import Outputs


def training_loss(logits: torch.Tensor, targets: torch.Tensor, outputs: Outputs,
                  config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(what to minimise, the cross-entropy alone: what the log reports)."""
    cross_entropy = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                    targets.reshape(-1))
    total = cross_entropy
    if config.activation_reg > 0:
        total = total + config.activation_reg * outputs.dropped.float().pow(2).mean()
    if config.temporal_activation_reg > 0:
        change = outputs.raw[:, 1:] - outputs.raw[:, :-1]
        total = total + config.temporal_activation_reg * change.float().pow(2).mean()
    return total, cross_entropy
