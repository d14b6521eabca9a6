"""The character LSTM: embedding -> LSTM -> dropout -> linear logits (no softmax inside).

Regularisation is training-only and leaves the exported graph untouched: dropout between and
after the LSTM layers, optional DropConnect on the recurrent (hidden-to-hidden) weights, which
regularises the recurrence itself without breaking the fused LSTM kernel, and optional dropout
of whole characters' embeddings (both from Merity et al., 2017).
"""

from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .loss import Outputs, nll_in_chunks

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

    @overload
    def forward(self, tokens: torch.Tensor, state: State | None = None, *,
                with_outputs: Literal[False] = False, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, State]: ...

    @overload
    def forward(self, tokens: torch.Tensor, state: State | None = None, *,
                with_outputs: Literal[True], targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, State, Outputs]: ...

    def forward(self, tokens: torch.Tensor, state: State | None = None, *,
                with_outputs: bool = False, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, State] | tuple[torch.Tensor, State, Outputs]:
        """Logits and the next state; `with_outputs` adds the last layer's outputs before and
        after dropout (for AR and TAR: a keyword, so DistributedDataParallel passes it on).

        With `targets` [batch, time] the first value is instead each position's negative
        log-likelihood of its target (nats, float32 [batch, time]), computed in slices so the
        logits of a large vocabulary never exist whole (see loss.py); inside forward, so
        DistributedDataParallel sees the head used."""
        if state is None:
            state = self.zero_state(tokens.shape[0], tokens.device)
        outputs, (h, c) = self._run_lstm(self._embed(tokens), state)
        dropped = self.dropout(outputs)
        logits = (self.head(dropped) if targets is None
                  else nll_in_chunks(dropped, self.head, targets))
        if with_outputs:
            return logits, (h, c), Outputs(outputs, dropped)
        return logits, (h, c)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedding dropout drops characters, not coordinates: each character's whole vector
        is zeroed (or scaled up) for the step, the same at every position it occurs."""
        p = self.config.embedding_dropout
        if not (self.training and p > 0):
            return self.embedding(tokens)
        weight = self.embedding.weight
        keep = torch.empty((weight.shape[0], 1), device=weight.device).bernoulli_(1 - p)
        return F.embedding(tokens, weight * keep / (1 - p))

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
