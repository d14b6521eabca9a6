"""The one decode core: rows that generate, as arrays, one character per step.

`Rows` holds what a generating row needs between two steps, for a whole batch at once: the
recurrent state, the logits of each row's next character, its random key and the number of
characters it has made (so it samples exactly as it would alone), its limit and its stop
strings. Rows may leave between any two steps (a static batch: `Generator`) and join too (the
continuous-batching `Engine`). Sampling runs once per group of rows that share settings.

`Generator` is the public step loop over it, in the spirit of onnxruntime-genai's: look at or
change the logits (logits processors), take a step, append text, read each row's text.
`Model.generate`, `Model.stream` and `Session.generate` are loops over a `Generator`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .contract import PADDING_ID
from .errors import InvalidArgumentError
from .generation import Batch, prefill
from .penalties import NO_PENALTIES, Penalties, PenaltyRows
from .runtime import Runner, State
from .sampling import SamplingParams, sample, uniform_table

DRAWS_AHEAD = 32  # steps of uniforms made at once (see Rows._uniforms)

LogitsProcessor = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
"""`(step, ids, logits) -> logits`, vectorised over the active rows of a `Generator`.

`step` is how many characters each row has sampled so far, `ids` [rows, n] the ids each row has
produced so far (sampled and appended; -1 where a row has fewer), `logits` [rows, vocab] the
scores of the next character. Return the changed logits (a new array or `logits` itself);
-inf bans a character. Processors run in order, before sampling, every step.
"""


@dataclass(frozen=True)
class RowSettings:
    """How one row samples and when it ends."""

    params: SamplingParams
    key: np.uint64  # the row's random stream (see sampling.row_keys)
    max_new: int
    stops: tuple[np.ndarray, ...] = ()
    penalties: Penalties = NO_PENALTIES  # frequency/presence/repetition, logit_bias, min_p

    @property
    def stop_key(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(i) for i in s) for s in self.stops)


class Rows:
    """Generating rows in row order; see the module docstring."""

    def __init__(self, runner: Runner, state: State, logits: np.ndarray,
                 settings: Sequence[RowSettings],
                 prompts: Sequence[np.ndarray] | None = None) -> None:
        self.runner = runner
        self.state = state
        self.logits = logits  # [rows, vocab]
        self.settings = list(settings)
        self.keys = np.array([s.key for s in self.settings], dtype=np.uint64)
        self.steps = np.zeros(len(self.settings), dtype=np.int64)
        self.max_new = np.array([s.max_new for s in self.settings], dtype=np.int64)
        width = max((len(stop) for s in self.settings for stop in s.stops), default=1)
        self.history = np.full((len(self.settings), width), PADDING_ID, dtype=np.int64)
        # Only the rows that use penalties are in it; None while no row does (the hot path).
        self.penalised: PenaltyRows | None = None
        self._join_penalties(0, self.settings, prompts)
        self._regroup()

    def __len__(self) -> int:
        return len(self.settings)

    def _regroup(self) -> None:
        """Index arrays of the rows that share sampling settings or stop strings; recomputed
        only when rows join or leave, never per step."""
        by_params: dict[SamplingParams, list[int]] = {}
        by_stops: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, row in enumerate(self.settings):
            by_params.setdefault(row.params, []).append(i)
            if row.stops:
                by_stops.setdefault(row.stop_key, []).append(i)
        every = len(by_params) == 1
        self.param_groups = [(p, slice(None) if every else np.array(ix))
                             for p, ix in by_params.items()]
        self.stop_groups = [(np.array(ix), self.settings[ix[0]].stops)
                            for ix in by_stops.values()]
        # The per-step fast path (a character model makes one call per character, so the
        # bookkeeping around it is a measurable share at batch 1): steps until the first row
        # reaches its limit, and the answers when nothing can end before that.
        count = len(self.settings)
        # Uniforms for the next DRAWS_AHEAD steps of every row, made together and used one
        # column per step; remade when rows join or leave (a row's numbers never change).
        self._draws: np.ndarray | None = None
        self._drawn = 0
        self._until_limit = int((self.max_new - self.steps).min()) if count else 0
        self._no_stops = np.zeros(count, dtype=np.int64)

    def _join_penalties(self, first: int, settings: Sequence[RowSettings],
                        prompts: Sequence[np.ndarray] | None) -> None:
        if not any(s.penalties.active for s in settings):
            return
        if self.penalised is None:
            self.penalised = PenaltyRows(self.logits.shape[1])
        self.penalised.join(first, [s.penalties for s in settings],
                            [s.params.temperature for s in settings], prompts)

    def join(self, state: State, logits: np.ndarray, settings: Sequence[RowSettings],
             prompts: Sequence[np.ndarray] | None = None) -> None:
        """Add rows (their state and next-character logits) at the end of the batch;
        `prompts` (the ids each read) count as seen for a repetition_penalty."""
        self._join_penalties(len(self.settings), settings, prompts)
        old_h, old_c = self.state.to_numpy()
        new_h, new_c = state.to_numpy()
        self.state = self.runner.state(np.concatenate([old_h, new_h], axis=1),
                                       np.concatenate([old_c, new_c], axis=1))
        self.logits = np.concatenate([self.logits, logits])
        self.settings += settings
        self.keys = np.concatenate([self.keys, [s.key for s in settings]]).astype(np.uint64)
        self.steps = np.concatenate([self.steps, np.zeros(len(settings), np.int64)])
        self.max_new = np.concatenate([self.max_new, [s.max_new for s in settings]]
                                      ).astype(np.int64)
        width = max([self.history.shape[1]]
                    + [len(stop) for s in settings for stop in s.stops])
        if width > self.history.shape[1]:
            pad = np.full((len(self.history), width - self.history.shape[1]), PADDING_ID)
            self.history = np.concatenate([pad, self.history], axis=1)
        self.history = np.concatenate(
            [self.history, np.full((len(settings), width), PADDING_ID, np.int64)])
        self._regroup()

    def keep(self, index: np.ndarray) -> None:
        """Only the rows at `index` go on (in that order)."""
        if self.penalised is not None:
            self.penalised.keep(index, len(self.settings))
            if not len(self.penalised):
                self.penalised = None
        self.settings = [self.settings[i] for i in index]
        self.state = self.state.select(index)
        self.logits = self.logits[index]
        self.keys, self.steps = self.keys[index], self.steps[index]
        # The stop history is as wide as the longest stop string of the rows that remain:
        # a row's long stop is released when it leaves, never kept for the batch's life.
        width = max((len(stop) for s in self.settings for stop in s.stops), default=1)
        self.max_new, self.history = self.max_new[index], self.history[index, -width:]
        self._regroup()

    def sample(self, logits: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One id per row from `logits` (default: the rows' own); returns the ids and, per
        row, the length of the stop string they complete (0 for none; the longest if several
        end here, since it starts first)."""
        logits = self.logits if logits is None else logits
        penalised = self.penalised
        if penalised is not None:
            logits = penalised.apply(logits)
        if len(self.param_groups) == 1:
            params = self.param_groups[0][0]
            ids = sample(logits, params, None if params.greedy else self._uniforms())
        else:
            ids = np.empty(len(self.settings), dtype=np.int64)
            u_all = (None if all(params.greedy for params, _ in self.param_groups)
                     else self._uniforms())
            for params, index in self.param_groups:
                u = None if params.greedy or u_all is None else u_all[index]
                ids[index] = sample(logits[index], params, u)
        self.steps += 1
        self._until_limit -= 1
        if penalised is not None:
            penalised.record(ids)
        if not self.stop_groups:
            return ids, self._no_stops  # shared and read-only
        stop_len = np.zeros(len(ids), dtype=np.int64)
        if self.stop_groups:
            self.history[:, :-1] = self.history[:, 1:]
            self.history[:, -1] = ids
            for index, stops in self.stop_groups:
                for stop in stops:
                    hit = (self.history[index, -len(stop):] == stop).all(axis=1)
                    stop_len[index] = np.maximum(stop_len[index], hit * len(stop))
        return ids, stop_len

    def _uniforms(self) -> np.ndarray:
        """Each row's uniform for its current step (`sampling.uniforms`)."""
        if self._draws is None or self._drawn == DRAWS_AHEAD:
            # step-major, so that each step's uniforms are contiguous
            self._draws = np.ascontiguousarray(
                uniform_table(self.keys, self.steps, DRAWS_AHEAD).T)
            self._drawn = 0
        self._drawn += 1
        return self._draws[self._drawn - 1]

    def finished(self, stop_len: np.ndarray) -> np.ndarray | None:
        """Rows that end with the ids just sampled (their limit or a stop string), or None
        when none can have: no stop strings and every row short of its limit."""
        if self._until_limit > 0 and not self.stop_groups:
            return None
        ends = (self.steps >= self.max_new) | (stop_len > 0)
        return ends if ends.any() else None

    def feed(self, ids: np.ndarray) -> None:
        """Advance every row over one id each; the logits become those of the next one."""
        logits, self.state = self.runner.step(ids[:, None], self.state)
        self.logits = logits[:, -1]

    def feed_text(self, ids: list[np.ndarray]) -> None:
        """Advance each row over its own ids (forced text), chunked, state carried."""
        batch = prefill(self.runner, ids, self.state)
        self.state, self.logits = batch.state, batch.logits


FinishReason = str  # "stop" | "length"


class Generator:
    """A batch of prompts generating one character per `step()`; rows leave when they end.

        gen = model.generator(["ROMEO:", "JULIET:"], max_new_chars=100, seed=[1, 2])
        while not gen.done:
            gen.logits            # [active rows, vocab]: the next character's scores
            rows, ids = gen.step()
        gen.texts                 # what every row made

    Each row samples exactly as it would alone with the same seed. `append()` forces text
    into rows (it becomes part of their text and their state).
    """

    def __init__(self, model_vocab_chars: Sequence[str], batch: Batch, runner: Runner,
                 settings: Sequence[RowSettings],
                 processors: Sequence[LogitsProcessor] = (), keep_state: bool = False,
                 encode: Callable[[str], np.ndarray] | None = None,
                 prompts: Sequence[np.ndarray] | None = None) -> None:
        self._chars = model_vocab_chars
        self._encode = encode
        self._rows = Rows(runner, batch.state, batch.logits, settings, prompts)
        self._index = np.arange(len(settings))  # original row number of each active row
        self._processors = list(processors)
        self._keep_state = keep_state
        count = len(settings)
        capacity = max(1, min(max((s.max_new for s in settings), default=1), 256))
        self._out = np.full((count, capacity), PADDING_ID, dtype=np.int32)
        self._lengths = np.zeros(count, dtype=np.int64)
        self._width = 0  # the longest row's length
        self._aligned = True  # every row has `_width` ids (nothing appended to some only)
        self._results: dict[int, tuple[np.ndarray, FinishReason]] = {}
        self._final: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for row in np.flatnonzero(self._rows.max_new == 0):
            self._results[int(row)] = (np.zeros(0, np.int32), "length")
        if self._results:
            self._leave(np.array(sorted(self._results)))

    # ------------------------------------------------------------------ reading

    @property
    def done(self) -> bool:
        """Every row has ended."""
        return not len(self._index)

    @property
    def active(self) -> np.ndarray:
        """Row numbers (as given) still generating, in the order of `logits`."""
        return self._index.copy()

    @property
    def logits(self) -> np.ndarray:
        """The next character's logits for the active rows [rows, vocab] (a copy)."""
        return np.array(self._rows.logits, copy=True)

    def ids(self, row: int) -> np.ndarray:
        """The ids row `row` has produced so far."""
        if row in self._results:
            return self._results[row][0]
        where = int(np.flatnonzero(self._index == row)[0])
        return self._out[where, : self._lengths[where]].copy()

    def text(self, row: int) -> str:
        return "".join(self._chars[i] for i in self.ids(row))

    @property
    def texts(self) -> list[str]:
        rows = len(self._results) + len(self._index)
        return [self.text(row) for row in range(rows)]

    def finish_reason(self, row: int) -> FinishReason | None:
        """"stop", "length", or None while the row is generating."""
        return self._results[row][1] if row in self._results else None

    # ------------------------------------------------------------------ stepping

    def step(self) -> tuple[np.ndarray, np.ndarray]:
        """One character for every active row; returns (row numbers, ids) of this step."""
        if self.done:
            raise InvalidArgumentError("the generator is done: every row has ended")
        rows = self._rows
        logits = None
        if self._processors:
            width = int(self._lengths.max())
            ids_so_far = self._out[:, :width]
            logits = np.array(rows.logits, dtype=np.float32, copy=True)
            step = int(rows.steps[0])
            for processor in self._processors:
                logits = checked_logits(processor, processor(step, ids_so_far, logits),
                                        rows.logits.shape)
        ids, stop_len = rows.sample(logits)
        self._record(ids)
        index = self._index
        finished = rows.finished(stop_len)
        if self._keep_state:
            rows.feed(ids)
        if finished is not None:
            ends = np.flatnonzero(finished)
            for i in ends:
                row = int(index[i])
                self._results[row] = (self._out[i, : self._lengths[i]].copy(),
                                      "stop" if stop_len[i] else "length")
                if self._keep_state:
                    h, c = rows.state.select(np.array([i])).to_numpy()
                    self._final[row] = (h, c, rows.logits[i : i + 1].copy())
            self._leave(ends)
            if not self._keep_state and len(self._index):
                rows.feed(ids[~finished])
        elif not self._keep_state:
            rows.feed(ids)
        return index, ids

    def append(self, text: str | Sequence[str]) -> None:
        """Force text into the active rows: one string for all, or one per active row (in
        the order of `active`; "" leaves a row as it is). It is fed through the model and
        becomes part of the rows' text; it does not count against `max_new_chars`."""
        if self._encode is None:
            raise InvalidArgumentError("this generator cannot encode text")
        texts = [text] * len(self._index) if isinstance(text, str) else list(text)
        if len(texts) != len(self._index):
            raise InvalidArgumentError(f"got {len(texts)} texts for {len(self._index)} active "
                                       "rows")
        encoded = [self._encode(t) for t in texts]
        chosen = np.array([i for i, e in enumerate(encoded) if len(e)], dtype=np.int64)
        if not len(chosen):
            return
        for i in chosen:
            self._record_row(int(i), encoded[i])
        rows = self._rows
        if len(chosen) == len(self._index):
            rows.feed_text(encoded)
            return
        sub = rows.state.select(chosen)
        batch = prefill(rows.runner, [encoded[i] for i in chosen], sub)
        h, c = rows.state.to_numpy()
        sub_h, sub_c = batch.state.to_numpy()
        h, c = h.copy(), c.copy()
        h[:, chosen], c[:, chosen] = sub_h, sub_c
        rows.state = rows.runner.state(h, c)
        rows.logits = rows.logits.copy()
        rows.logits[chosen] = batch.logits

    def final_state(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(h, c, logits) after row `row`'s last character (generators with keep_state)."""
        return self._final[row]

    # ------------------------------------------------------------------ internals

    def _grow(self, needed: int) -> None:
        if needed <= self._out.shape[1]:
            return
        grown = np.full((len(self._out), max(needed, 2 * self._out.shape[1])), PADDING_ID,
                        dtype=np.int32)
        grown[:, : self._out.shape[1]] = self._out
        self._out = grown

    def _record(self, ids: np.ndarray) -> None:
        self._grow(self._width + 1)
        if self._aligned:
            self._out[:, self._width] = ids
        else:
            self._out[np.arange(len(ids)), self._lengths] = ids
        self._lengths += 1
        self._width += 1

    def _record_row(self, i: int, ids: np.ndarray) -> None:
        self._grow(int(self._lengths[i]) + len(ids))
        self._out[i, self._lengths[i] : self._lengths[i] + len(ids)] = ids
        self._lengths[i] += len(ids)
        self._width = max(self._width, int(self._lengths[i]))
        self._aligned = bool((self._lengths == self._width).all())

    def _leave(self, ends: np.ndarray) -> None:
        keep = np.setdiff1d(np.arange(len(self._index)), ends)
        self._index = self._index[keep]
        self._out, self._lengths = self._out[keep], self._lengths[keep]
        if len(keep):
            self._rows.keep(keep)


def checked_logits(processor: object, returned: object, shape: tuple[int, ...]) -> np.ndarray:
    """A logits processor's output as float32 logits, or an InvalidArgumentError naming the
    processor: a number array of the batch's shape, no NaN or +inf, and in every row at least
    one finite logit (all -inf leaves nothing to sample). A few vector operations per step,
    and only when processors are given."""
    name = getattr(processor, "__qualname__", None) or type(processor).__name__
    array = np.asarray(returned)
    if array.dtype.kind not in "fiu":
        raise InvalidArgumentError(f"logits processor {name} returned {array.dtype} values; "
                                   "expected numbers", param="logits_processors")
    if array.shape != shape:
        raise InvalidArgumentError(f"logits processor {name} returned shape {array.shape}; "
                                   f"expected {shape}", param="logits_processors")
    logits = array.astype(np.float32, copy=False)
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise InvalidArgumentError(f"logits processor {name} returned NaN or +inf",
                                   param="logits_processors")
    if not np.isfinite(logits).any(axis=-1).all():
        raise InvalidArgumentError(f"logits processor {name} left a row with no finite logit "
                                   "(all -inf): nothing can be sampled", param="logits_processors")
    return logits
