"""An exponential moving average of the weights, evaluated and exported instead of the last ones.

The last weights of a run carry the noise of its last few hundred steps; their average does
not (Polyak averaging; AWD-LSTM's averaged SGD is the same idea with an equal-weight average).
The average lives in a second `CharLSTM` so evaluation, checkpoints and export use it as they
would any model. Its decay is warmed up, min(decay, (1 + n) / (10 + n)) after n updates, so the
first steps' random weights are forgotten quickly.
"""

from __future__ import annotations

import copy

import torch

from .model import CharLSTM


def warmed_decay(decay: float, updates: int) -> float:
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """Holds the averaged copy of `model`; `update` after every optimizer step."""

    def __init__(self, model: CharLSTM, decay: float, updates: int = 0) -> None:
        self.decay = decay
        self.updates = updates
        # A copy, not a new CharLSTM: building one would draw initial weights from the global
        # RNG, and a resumed run would then sample different dropout masks than an unbroken one.
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: CharLSTM) -> None:
        """average += (1 - decay) * (weights - average), in float32, in place."""
        weight = 1.0 - warmed_decay(self.decay, self.updates)
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current.detach(), weight)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights)
