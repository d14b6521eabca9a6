"""What `bard bench` measures and reports: its settings, one measurement, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1, 8, 64, 256)
    new_chars: int = 200
    repeats: int = 5
    prefill_chars: int = 1000
    train_steps: int = 60
    threads: int | None = None

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(batches=(1, 8), new_chars=20, repeats=2, prefill_chars=200, train_steps=6)


CUDA_BATCHES = (1, 64, 256, 1024)


@dataclass
class Measurement:
    engine: str
    metric: str
    batch: int
    median: float
    low: float
    high: float
    unit: str


@dataclass
class Report:
    machine: dict[str, Any]
    config: dict[str, Any]
    model: str
    measurements: list[Measurement] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    extras: dict[str, float] = field(default_factory=dict)

    def get(self, engine: str, metric: str, batch: int) -> float:
        for m in self.measurements:
            if (m.engine, m.metric, m.batch) == (engine, metric, batch):
                return m.median
        return float("nan")
