"""Progress for humans: a rich bar (loss, chars/s, ETA) on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    def __init__(self, *, enabled: bool, total: int, start: int) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[speed]:,.0f} chars/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self.live,
        )
        self.task = self.bar.add_task("train", total=total, completed=start, loss=float("nan"),
                                      speed=0.0)

    def __enter__(self) -> TrainProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.bar.__exit__(kind, error, trace)

    def update(self, step: int, loss: float, speed: float) -> None:
        if self.live:
            self.bar.update(self.task, completed=step, loss=loss, speed=speed)

    def note(self, message: str) -> None:
        if self.live:
            self.bar.console.print(message)
        elif self.enabled:
            print(message, file=sys.stderr, flush=True)
