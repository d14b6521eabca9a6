"""The character LSTM: embedding -> LSTM -> dropout -> linear logits (no softmax inside).

Regularisation is training-only and leaves the exported graph untouched: dropout between and
after the LSTM layers, and optional DropConnect on the recurrent (hidden-to-hidden) weights, which
regularises the recurrence itself without breaking the fused LSTM kernel (Merity et al., 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

State = tuple[torch.Tensor, torch.Tensor]


class CharLSTM(nn.Module):
    """Maps token ids [batch, time] and an optional (h, c) state to logits and the next state."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_size,
            config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def zero_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, tokens: torch.Tensor,
                state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.zero_state(tokens.shape[0], tokens.device)
        outputs, (h, c) = self._run_lstm(self.embedding(tokens), state)
        return self.head(self.dropout(outputs)), (h, c)

    def _run_lstm(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One mask per forward pass on each weight_hh, shared by every time step."""
        p = self.config.weight_drop
        if not (self.training and p > 0):
            return self.lstm(inputs, state)
        dropped = {
            f"weight_hh_l{layer}": F.dropout(getattr(self.lstm, f"weight_hh_l{layer}"), p)
            for layer in range(self.config.num_layers)
        }
        return torch.func.functional_call(self.lstm, dropped, (inputs, state))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
