"""`Session`: one text continued across calls, with its LSTM state as plain numpy arrays.

The state after any text is (h, c) plus the logits for the next character; exporting those
three arrays and restoring them (in this process or another) continues the text exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from . import contract
from .arguments import describe, integer, string
from .decoding import Generator, LogitsProcessor
from .errors import InvalidArgumentError
from .generation import Batch, prefill
from .manifest import Manifest
from .options import GenerationOptions
from .runtime import Runner
from .vocab import OnUnknown, Vocabulary


class SessionModel(Protocol):
    """What a session needs of its `Model` (so this module does not import model.py, which
    imports it for `Model.session`)."""

    manifest: Manifest
    vocab: Vocabulary
    runner: Runner
    prime_id: int | None

    def encode(self, text: str, on_unknown: OnUnknown = "error",
               replacement: str | None = None) -> np.ndarray: ...


class Session:
    """A single stream of text; not shared between threads (fork it instead)."""

    def __init__(self, model: SessionModel, h: np.ndarray, c: np.ndarray,
                 logits: np.ndarray | None, length: int = 0) -> None:
        self.model = model
        self.h, self.c = h, c
        self.logits = logits  # None until something has been fed
        self.length = length  # characters fed so far

    def feed(self, text: str, *, on_unknown: OnUnknown = "error",
             replacement: str | None = None) -> None:
        """Advance the state over `text` (prefill: chunked, state carried)."""
        ids = self.model.encode(string(text, "text"), on_unknown, replacement)
        if not len(ids):
            return
        runner = self.model.runner
        batch = prefill(runner, [ids], runner.state(self.h, self.c))
        self._keep(batch, len(ids))

    def _keep(self, batch: Batch, added: int) -> None:
        self.h, self.c = batch.state.to_numpy()
        self.logits = np.array(batch.logits, copy=True)
        self.length += added

    def generate(self, max_new_chars: int = 200, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 stop: str | Sequence[str] | None = None, seed: int | None = None,
                 logits_processors: Sequence[LogitsProcessor] = ()) -> str:
        """Continue the text; what is generated becomes part of the session's state."""
        model = self.model
        options = GenerationOptions.checked(
            model.vocab, max_new_chars=max_new_chars, temperature=temperature, top_k=top_k,
            top_p=top_p, stop=stop, seed=seed, logits_processors=logits_processors,
            single_seed=True)
        if options.max_new_chars == 0:
            return ""
        runner = model.runner
        if self.logits is None:  # nothing fed yet: the empty-prompt rule, as Model reads it
            empty = contract.prompt_ids(np.zeros(0, np.int64), model.prime_id)
            batch = prefill(runner, [empty], runner.state(self.h, self.c))
        else:
            batch = Batch(runner.state(self.h, self.c), self.logits)
        gen = Generator(model.vocab.chars, batch, runner, options.row_settings(1),
                        options.logits_processors, keep_state=True)
        while not gen.done:
            gen.step()
        out = gen.ids(0)
        self.h, self.c, self.logits = gen.final_state(0)
        self.length += len(out)
        return model.vocab.decode(out)

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
    def restore(cls, model: SessionModel, state: Mapping[str, Any]) -> Session:
        """Rebuild a session from `export_state()` output (e.g. `dict(np.load(path))`),
        checking keys, shapes, dtypes, finiteness and length against the model."""
        if not isinstance(state, Mapping):
            raise InvalidArgumentError(f"state must be a mapping of arrays (export_state()), "
                                       f"got {type(state).__name__}")
        keys = set(state)
        if not {"h", "c"} <= keys or keys - STATE_KEYS:
            raise InvalidArgumentError(
                f"state must hold 'h' and 'c' (and optionally 'logits', 'length'); got keys "
                f"{describe(sorted(map(str, keys)))}")
        shape = contract.state_shape(model.manifest.num_layers, 1, model.manifest.hidden_size)
        h = _float_array(state["h"], "h", shape)
        c = _float_array(state["c"], "c", shape)
        logits = state.get("logits")
        if logits is not None:
            logits = _float_array(logits, "logits", (1, len(model.vocab)))
        length = state.get("length", 0)
        if isinstance(length, np.ndarray) and length.ndim == 0:
            length = length[()]
        length = integer(length, "state length", minimum=0)
        if logits is None and length:
            raise InvalidArgumentError(f"state has length {length} but no logits")
        return cls(model, h, c, logits, length)


STATE_KEYS = {"h", "c", "logits", "length"}


def _float_array(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 copy of one state array, refused unless it is numeric, the right shape and
    finite (an object array or NaN would otherwise turn into a silently broken session)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise InvalidArgumentError(f"state {name!r} must be a numeric numpy array, got {kind}")
    if value.shape != shape:
        raise InvalidArgumentError(f"state {name!r} has shape {value.shape}; this model needs "
                                   f"{shape}")
    with np.errstate(over="ignore"):
        array = np.array(value, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidArgumentError(f"state {name!r} holds non-finite values")
    return array
