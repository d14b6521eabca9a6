"""Turn a bench Report into a terminal table and a chars/s-against-batch plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bard.training.plotting import new_axes, save_figure

if TYPE_CHECKING:
    from .results import Report


def table(report: Report) -> str:
    lines = [f"model: {report.model}",
             "machine: " + ", ".join(f"{k} {v}" for k, v in report.machine.items()), "",
             "| engine | metric | batch | median | low | high | unit |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in report.measurements:
        lines.append(f"| {m.engine} | {m.metric} | {m.batch or '-'} | {m.median:,.1f} | "
                     f"{m.low:,.1f} | {m.high:,.1f} | {m.unit} |")
    lines += ["", "| ratio | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.2f}x |" for name, value in report.ratios.items()]
    lines += ["", "| extra | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.3f} |" for name, value in report.extras.items()]
    return "\n".join(lines)


def plot(report: Report, path: Path) -> None:
    figure, axes = new_axes(4.5)
    engines = sorted({m.engine for m in report.measurements if m.metric == "chars_per_s"})
    for engine in engines:
        points = sorted((m.batch, m.median) for m in report.measurements
                        if m.engine == engine and m.metric == "chars_per_s")
        axes.plot(*zip(*points), marker="o", label=engine)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("batch size")
    axes.set_ylabel("characters per second (greedy)")
    save_figure(figure, axes, path)
