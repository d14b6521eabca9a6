"""Configuration for a training run: model sizes, optimisation, and the named presets.

Everything that shapes a run lives here, visible at a glance (nanoGPT style). A run's full
config is stored with every checkpoint, so a run directory always says how it was made.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError


def option(default: Any, help: str, *flags: str) -> Any:
    """A config field that is also a `bard train` option: its help text and any extra flags
    live here, once; the CLI derives `--field-name` from the field (see bard/cli.py)."""
    return field(default=default, metadata={"help": help, "flags": flags})


def cli_options() -> list[tuple[str, type, str, tuple[str, ...]]]:
    """(name, type, help, extra flags) of every field declared with `option`, model first."""
    found = []
    for config in (ModelConfig, TrainConfig):
        hints = {"int": int, "float": float, "str": str, "int | None": int,
                 "float | None": float}
        for item in dataclasses.fields(config):
            if "help" in item.metadata:
                found.append((item.name, hints[str(item.type)], item.metadata["help"],
                              item.metadata["flags"]))
    return found


def check_finite(config: object) -> None:
    """NaN passes every `x < 0` check, so non-finite floats are refused before any other."""
    for item in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{item.name.replace('_', ' ')} must be a finite number, "
                             f"got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the character LSTM; the vocabulary size comes from the corpus."""

    vocab_size: int
    embedding_dim: int = option(64, "Size of each character's embedding.")
    hidden_size: int = option(256, "LSTM units per layer.")
    num_layers: int = option(2, "Stacked LSTM layers.")
    dropout: float = option(0.1, "Dropout between and after the LSTM layers.")
    weight_drop: float = option(0.0, "DropConnect on the recurrent weights while training "
                                "(AWD-LSTM).")
    embedding_dropout: float = option(0.0, "Drop whole characters' embeddings while training "
                                      "(one mask per step, AWD-LSTM).")

    def validate(self) -> None:
        check_finite(self)
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.weight_drop < 1.0:
            raise UsageError(f"weight drop must be in [0, 1), got {self.weight_drop}")
        if not 0.0 <= self.embedding_dropout < 1.0:
            raise UsageError(f"embedding dropout must be in [0, 1), got "
                             f"{self.embedding_dropout}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping settings; `decay_steps` defaults to `max_steps`."""

    batch_size: int = option(32, "Windows per step (per process).")
    seq_len: int = option(64, "Characters per window.")
    max_steps: int = option(300, "Stop after this many steps.")
    decay_steps: int | None = option(None, "Cosine schedule length (default: max-steps).")
    warmup_steps: int = option(20, "Linear warm-up steps.")
    learning_rate: float = option(3e-3, "Peak learning rate.", "--lr")
    min_learning_rate: float = option(3e-4, "Learning rate at the end of the cosine.",
                                      "--min-lr")
    weight_decay: float = option(0.1, "AdamW weight decay (matrices only).")
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = option(1.0, "Clip the gradient norm to this.")
    ema_decay: float = option(0.0, "Evaluate, keep and export an exponential moving average "
                              "of the weights with this decay, e.g. 0.999 (0: the last "
                              "weights).")
    activation_reg: float = option(0.0, "AR: add this x the mean square of the last layer's "
                                   "dropped-out outputs to the loss (AWD-LSTM).")
    temporal_activation_reg: float = option(0.0, "TAR: add this x the mean square of the "
                                            "last layer's step-to-step output change.")
    eval_interval: int = option(100, "Evaluate (and checkpoint) every N steps.")
    eval_chars: int = option(1_000_000, "Validation characters per evaluation while "
                             "training; the best checkpoint is scored on the whole split at "
                             "the end.")
    val_fraction: float = option(0.1, "The last fraction of the corpus is validation.")
    val_streams: int = option(16, "Validation streams evaluated side by side.")
    patience: int | None = option(None, "Early stop after N evaluations without gain.")
    max_minutes: float | None = option(None, "Stop (evaluate, checkpoint) once this many "
                                       "minutes of this invocation have passed.")
    seed: int = option(1337, "Seed for initialisation and batches.")
    precision: str = option("auto", "auto | fp32 | bf16 (auto: bf16 on CUDA, fp32 on CPU).")

    @property
    def schedule_steps(self) -> int:
        return self.decay_steps if self.decay_steps is not None else self.max_steps

    def validate(self) -> None:
        check_finite(self)
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        positive = ("batch_size", "seq_len", "max_steps", "eval_interval", "val_streams")
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_chars < 2:
            raise UsageError(f"eval_chars must be at least 2, got {self.eval_chars}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise UsageError(f"decay_steps must be at least 1, got {self.decay_steps}")
        if self.warmup_steps < 0:
            raise UsageError(f"warmup_steps must be non-negative, got {self.warmup_steps}")
        if not self.learning_rate > 0:
            raise UsageError(f"learning rate must be positive, got {self.learning_rate}")
        if not 0 <= self.min_learning_rate <= self.learning_rate:
            raise UsageError(
                f"min learning rate must be in [0, learning rate], got {self.min_learning_rate}"
            )
        if self.weight_decay < 0:
            raise UsageError(f"weight decay must be non-negative, got {self.weight_decay}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UsageError(f"ema decay must be in [0, 1), got {self.ema_decay}")
        for name in ("activation_reg", "temporal_activation_reg"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', ' ')} must be non-negative, got "
                                 f"{getattr(self, name)}")
        if not self.grad_clip > 0:
            raise UsageError(f"gradient clip must be positive, got {self.grad_clip}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"val fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UsageError(f"max minutes must be positive, got {self.max_minutes}")
        if self.patience is not None and self.patience < 1:
            raise UsageError(f"patience must be at least 1, got {self.patience}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise UsageError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")


@dataclass(frozen=True)
class Preset:
    """A named starting point; any field can still be overridden on the command line."""

    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # Seconds on a 2-core CPU: for tests, CI and the demo.
    "tiny": Preset(
        model=dict(embedding_dim=32, hidden_size=128, num_layers=1, dropout=0.0),
        train=dict(batch_size=32, seq_len=64, max_steps=300, warmup_steps=20,
                   learning_rate=1e-2, min_learning_rate=1e-3, eval_interval=100),
    ),
    # The shipped reference model; see artifacts/shakespeare/README.md for the measurements
    # behind these numbers.
    "shakespeare": Preset(
        model=dict(embedding_dim=128, hidden_size=512, num_layers=2, dropout=0.35,
                   weight_drop=0.4),
        train=dict(batch_size=64, seq_len=256, max_steps=2800, warmup_steps=100,
                   learning_rate=2e-3, min_learning_rate=1e-4, weight_decay=0.1,
                   eval_interval=200, precision="bf16"),
    ),
    # `--init-from`'s default: the architecture and the regularisation come from the source
    # model; half the shipped model's peak rate, a short cosine, early stopping on the new text's
    # validation split. BENCHMARKS.md "Fine-tuning" has the measurements behind it.
    "finetune": Preset(
        train=dict(batch_size=32, seq_len=128, max_steps=600, warmup_steps=20,
                   learning_rate=1e-3, min_learning_rate=1e-4, weight_decay=0.1,
                   eval_interval=25, patience=4),
    ),
}
ARCHITECTURE = ("embedding_dim", "hidden_size", "num_layers")


def build_configs(
    preset: str, vocab_size: int, overrides: dict[str, Any],
    base_model: ModelConfig | None = None,
) -> tuple[ModelConfig, TrainConfig]:
    """Merge a preset with explicit overrides (None means 'not given') and validate. With
    `base_model` (a model to fine-tune) the model's settings start from it instead of the
    preset, and its architecture cannot be overridden."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    given = {k: v for k, v in overrides.items() if v is not None}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(given) - model_fields - train_fields
    if unknown:
        raise UsageError(f"unknown settings: {', '.join(sorted(unknown))}")
    base = chosen.model
    if base_model is not None:
        base = {k: v for k, v in dataclasses.asdict(base_model).items() if k != "vocab_size"}
        clash = sorted(k for k in ARCHITECTURE if k in given and given[k] != base[k])
        if clash:
            raise UsageError(f"the architecture comes from --init-from: {clash[0]} is "
                             f"{base[clash[0]]} there, not {given[clash[0]]}")
    model_kwargs = {**base, **{k: v for k, v in given.items() if k in model_fields}}
    train_kwargs = {**chosen.train, **{k: v for k, v in given.items() if k in train_fields}}
    model_config = ModelConfig(vocab_size=vocab_size, **model_kwargs)
    train_config = TrainConfig(**train_kwargs)
    model_config.validate()
    train_config.validate()
    return model_config, train_config
