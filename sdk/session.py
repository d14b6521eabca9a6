"""`Session`: one text continued across calls, with its LSTM state as plain numpy arrays.

The state after any text is (h, c) plus the logits for the next character; exporting those
three arrays and restoring them (in this process or another) continues the text exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .generation import Batch, decode, prefill
from .model import check_max_new
from .sampling import SamplingParams, row_keys
from .vocab import OnUnknown

if TYPE_CHECKING:
    from .model import Model


class Session:
    """A single stream of text; not shared between threads (fork it instead)."""

    def __init__(self, model: Model, h: np.ndarray, c: np.ndarray,
                 logits: np.ndarray | None, length: int = 0) -> None:
        self.model = model
        self.h, self.c = h, c
        self.logits = logits  # None until something has been fed
        self.length = length  # characters fed so far

    def feed(self, text: str, on_unknown: OnUnknown = "error",
             replacement: str | None = None) -> None:
        """Advance the state over `text` in one onnxruntime call."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        ids = self.model.encode(text, on_unknown, replacement)
        if not len(ids):
            return
        runner = self.model.runner
        batch = prefill(runner, [ids], runner.state(self.h, self.c))
        self._keep(batch, len(ids))

    def _keep(self, batch: Batch, added: int) -> None:
        self.h, self.c = batch.state.to_numpy()
        self.logits = np.array(batch.logits, copy=True)
        self.length += added

    def generate(self, max_new_chars: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 stop: str | Sequence[str] | None = None, seed: int | None = None) -> str:
        """Continue the text; what is generated becomes part of the session's state."""
        check_max_new(max_new_chars)
        params = SamplingParams(temperature, top_k, top_p)
        params.validate(len(self.model.vocab))
        stops = self.model._stops(stop)
        if max_new_chars == 0:
            return ""
        runner = self.model.runner
        if self.logits is None:  # nothing fed yet: prime with a newline, as Model does
            batch = prefill(runner, [np.array([self.model.prime_id])],
                            runner.state(self.h, self.c))
        else:
            batch = Batch(runner.state(self.h, self.c), self.logits)
        out = [int(ids[0]) for _, ids in decode(runner, batch, max_new_chars, params,
                                                row_keys([seed]), stops, feed_last=True)]
        self._keep(batch, len(out))
        return self.model.vocab.decode(out)

    def fork(self) -> Session:
        """An independent copy: both continue from here without affecting each other."""
        logits = None if self.logits is None else self.logits.copy()
        return Session(self.model, self.h.copy(), self.c.copy(), logits, self.length)

    def export_state(self) -> dict[str, np.ndarray]:
        """The state as numpy arrays (save with np.savez; no pickle needed)."""
        state = {"h": self.h.copy(), "c": self.c.copy(), "length": np.array(self.length)}
        if self.logits is not None:
            state["logits"] = self.logits.copy()
        return state

    @classmethod
    def restore(cls, model: Model, state: dict[str, np.ndarray]) -> Session:
        """Rebuild a session from `export_state()` output, checking shapes against the model."""
        shape = (model.manifest.num_layers, 1, model.manifest.hidden_size)
        h = np.asarray(state["h"], dtype=np.float32)
        c = np.asarray(state["c"], dtype=np.float32)
        if h.shape != shape or c.shape != shape:
            raise ValueError(f"state shapes {h.shape}, {c.shape} do not fit this model {shape}")
        logits = state.get("logits")
        if logits is not None:
            logits = np.asarray(logits, dtype=np.float32)
            if logits.shape != (1, len(model.vocab)):
                raise ValueError(f"state logits shape {logits.shape} does not fit this model")
        return cls(model, h.copy(), c.copy(), logits, int(state.get("length", 0)))
