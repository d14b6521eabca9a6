"""SIGINT/SIGTERM become a flag the trainer polls between steps and between evaluation chunks,
so a stop is honoured within a chunk's time and the last complete step is checkpointed.

Before training starts (`flag["started"]` false: the corpus being scanned or encoded, the
model being built) there is nothing to checkpoint, so the handler raises StoppedBeforeStart
at once instead, and the trainer removes what the run had written: a stopped run is always
either resumable or gone, never a directory that neither starts nor resumes.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from .errors import StoppedBeforeStart


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, int]]:
    flag = {"signal": 0, "started": 0}
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: object) -> None:
        flag["signal"] = signum
        if not flag["started"]:
            raise StoppedBeforeStart(signum)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
