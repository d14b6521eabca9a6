"""The learning rate at every step, fixed when a run starts and stored in every checkpoint.

Linear warm-up, cosine decay to the minimum at `decay_steps`, then flat. A resumed run reads the
schedule back instead of recomputing it from the current flags, so changing `--max-steps` never
stretches the cosine (the old bug: resuming a 2,800-step run to 4,000 steps made the learning
rate jump from 1.0e-4 to 5.1e-4). The two legitimate changes are explicit: `extended` re-plans a
cosine from the current step and rate down to the minimum at the new horizon (continuous, no
jump), and `overridden` rescales the rates after a divergence.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .config import TrainConfig
from .errors import UsageError


@dataclass(frozen=True)
class Schedule:
    warmup_steps: int
    decay_steps: int
    learning_rate: float
    min_learning_rate: float
    total_steps: int  # the horizon (max_steps or decay_steps): going beyond it needs --extend
    restart_step: int | None = None  # where a re-planned cosine begins (after --extend)
    restart_learning_rate: float | None = None
    restart_end: int | None = None

    @classmethod
    def from_config(cls, config: TrainConfig) -> Schedule:
        return cls(warmup_steps=config.warmup_steps, decay_steps=config.schedule_steps,
                   learning_rate=config.learning_rate,
                   min_learning_rate=config.min_learning_rate,
                   total_steps=max(config.max_steps, config.schedule_steps))

    def validate(self) -> None:
        restart = (self.restart_step, self.restart_learning_rate, self.restart_end)
        if any(v is None for v in restart) and any(v is not None for v in restart):
            raise UsageError("restart_step, restart_learning_rate and restart_end go together")
        numbers = (self.learning_rate, self.min_learning_rate, self.restart_learning_rate or 0.0)
        if not all(math.isfinite(x) and x >= 0 for x in numbers):
            raise UsageError("learning rates must be finite and non-negative")
        if min(self.warmup_steps, self.decay_steps, self.total_steps) < 0:
            raise UsageError("step counts must be non-negative")

    def lr_at(self, step: int) -> float:
        """The learning rate for the update that follows `step` completed steps."""
        if self.restart_step is not None and step >= self.restart_step:
            start, end = self.restart_step, self.restart_end or self.restart_step
            peak = self.restart_learning_rate or 0.0
        elif step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        else:
            start, end, peak = self.warmup_steps, self.decay_steps, self.learning_rate
        progress = min(1.0, (step - start) / max(1, end - start))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_learning_rate + cosine * (peak - self.min_learning_rate)

    def extended(self, step: int, total_steps: int) -> Schedule:
        """From `step` on, a cosine from the current rate down to the minimum at
        `total_steps`: the rate is continuous at `step`."""
        return dataclasses.replace(self, total_steps=total_steps, restart_step=step,
                                   restart_learning_rate=self.lr_at(step),
                                   restart_end=total_steps)

    def overridden(self, learning_rate: float | None,
                   min_learning_rate: float | None) -> Schedule:
        """A new peak rate scales the whole curve (the minimum too, unless it is given)."""
        factor = 1.0 if learning_rate is None else learning_rate / self.learning_rate
        restart = self.restart_learning_rate
        return dataclasses.replace(
            self, learning_rate=self.learning_rate * factor,
            min_learning_rate=(min_learning_rate if min_learning_rate is not None
                               else self.min_learning_rate * factor),
            restart_learning_rate=None if restart is None else restart * factor)


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """The rate a fresh run with `config` uses after `step` steps."""
    return Schedule.from_config(config).lr_at(step)
