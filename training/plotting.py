"""The loss-curve PNG beside a run's metrics (train and validation, nats per character)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_bytes


def new_axes(height: float = 4.0) -> tuple[Any, Any]:
    """A headless (Agg) figure and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, height), dpi=100)


def save_figure(figure: Any, axes: Any, path: Path) -> None:
    """Finish the figure (grid, legend, layout) and write it as a PNG atomically."""
    import matplotlib.pyplot as plt

    axes.grid(alpha=0.3, which="both")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def save_loss_curve(records: list[dict[str, Any]], path: Path) -> None:
    train = [(r["step"], r["loss"]) for r in records if r.get("split") == "train"]
    val = [(r["step"], r["loss"]) for r in records if r.get("split") == "val"]
    figure, axes = new_axes()
    if train:
        axes.plot(*zip(*train), label="train (dropout on)", linewidth=1, alpha=0.8)
    if val:
        axes.plot(*zip(*val), label="validation", marker="o", markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per character)")
    save_figure(figure, axes, path)
