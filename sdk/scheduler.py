"""`Scheduler`: continuous batching as plain method calls, with no threads and no locks.

A recurrent model's whole per-sequence state is a fixed-size (h, c), so requests can join and
leave a running batch between any two steps (iteration-level scheduling, as in Orca and vLLM).
`add` queues a request, `cancel` marks one to leave, and each `step()`

1. drops cancelled requests (queued, prefilling or generating: a caller that leaves frees
   its row within one step),
2. admits queued requests, oldest first, up to `max_active` rows in flight,
3. runs one prefill chunk for every row still reading its prompt (`Prefill`: at most
   `prefill_chunk` characters per row), as wide as the prefill budget allows (`PrefillBudget`:
   while rows generate, prompts take about `prefill_share` times the decode steps' time, in
   slices sized from the measured cost of a column, so a long prompt never stalls the rows
   that generate),
4. runs one decode step for every generating row (`RunningBatch`): sample, hand the text to
   the request, retire the rows that end, feed the rest with the rows that just joined.

It returns the requests that ended in the step with their outcome; whoever drives it (the
`Engine`'s thread, or a test) finishes them. Each row samples exactly as `Model.generate` does
alone (same prefill semantics, same random stream keyed by (seed, step), same stop rule).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .contract import PADDING_ID
from .decoding import Rows
from .errors import BardError
from .logprobs import CharLogprob, char_logprobs, first_char
from .model import Model
from .requests import Completion, FinishReason, Outcome, Request

Finished = list[tuple[Request, Outcome]]
"""The requests that ended in one step, each with its completion or error."""

# A stream (a request its caller iterates) drops the text it has handed over once this much has
# gone out: what the engine holds for it stays bounded however long it runs.
STREAM_KEEP_CHARS = 4096


class Row:
    """A request inside the engine: where its prompt is read up to, and the text it has made
    and handed over (with the hold-back that keeps a stop string's start out of a stream).
    A request with logprobs keeps one entry per produced character in `entries` (None for the
    others, which do no logprob work at all) and, with prompt_logprobs, its prompt's."""

    __slots__ = ("cursor", "dropped", "entries", "held", "produced", "prompt_entries",
                 "request", "sent")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.cursor = 0  # prompt characters fed so far
        self.produced: list[str] = []
        self.sent = 0  # characters of `produced` handed to the caller
        self.dropped = 0  # characters handed over and no longer kept (a stream's)
        longest_stop = max((len(s) for s in request.stops), default=0)
        # Without the stop string in the text, the last few characters wait until they
        # cannot be the start of one.
        self.held = 0 if request.include_stop else max(longest_stop - 1, 0)
        self.entries: list[CharLogprob] | None = None if request.logprobs is None else []
        self.prompt_entries: list[CharLogprob] | None = None
        if request.prompt_logprobs is not None:
            # the prompt's first character: nothing predicts it (an empty prompt has none)
            self.prompt_entries = ([first_char(int(request.prompt_ids[0]))]
                                   if request.prompt_chars else [])
            request.mailbox.put("", self.prompt_entries)

    def emit(self, ch: str) -> None:
        """A character of a row that goes on."""
        self.produced.append(ch)
        if len(self.produced) - self.sent > self.held:
            end = len(self.produced) - self.held
            entries = self.entries
            self.request.mailbox.put("".join(self.produced[self.sent : end]),
                                     None if entries is None else entries[self.sent : end])
            self.sent = end
            if self.sent >= STREAM_KEEP_CHARS and self.request.streamed:
                del self.produced[: self.sent]  # a stream keeps only its unread text
                if self.entries is not None:
                    del self.entries[: self.sent]
                self.dropped += self.sent
                self.sent = 0

    def scored(self, entries: list[CharLogprob]) -> None:
        """Log-probabilities of prompt characters the prefill just read past."""
        assert self.prompt_entries is not None
        self.prompt_entries += entries
        self.request.mailbox.put("", entries)

    def finish(self, ch: str | None, reason: FinishReason, stop_len: int) -> Completion:
        """The row's last character (None when cancelled) and why it ends: hands over the
        text not sent yet and returns the completion."""
        request = self.request
        if ch is not None:
            self.produced.append(ch)
        text = "".join(self.produced)
        if reason == "stop" and not request.include_stop:
            text = text[: len(text) - stop_len]
        entries = None if self.entries is None else self.entries[: len(text)]
        if len(text) > self.sent:
            request.mailbox.put(text[self.sent :], entries and entries[self.sent :])
        made = self.dropped + len(self.produced)
        # A stream's text went out piece by piece and is not kept: its completion has none.
        if request.streamed:
            return Completion("", reason, request.prompt_chars, made)
        prompt = None if self.prompt_entries is None else tuple(self.prompt_entries)
        return Completion(text, reason, request.prompt_chars, made,
                          None if entries is None else tuple(entries), prompt)


@dataclass
class Ready:
    """Rows whose prompts are read but for the last character, with their state: that
    character is fed with the batch's next step, so joining costs no graph call of its own."""

    rows: list[Row]
    h: np.ndarray
    c: np.ndarray
    last_ids: np.ndarray


class Prefill:
    """Admitted rows still reading their prompts, and their state [layers, rows, hidden]."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.rows: list[Row] = []
        self.h, self.c = model.zero_state(0)

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, rows: list[Row]) -> None:
        """New rows start from the zero state, after the rows already reading."""
        zeros_h, zeros_c = self.model.zero_state(len(rows))
        self.rows += rows
        self.h = np.concatenate([self.h, zeros_h], axis=1)
        self.c = np.concatenate([self.c, zeros_c], axis=1)

    def drop(self, cancelled: set[int]) -> list[Row]:
        """Remove the rows of cancelled requests; returns them."""
        gone = [row for row in self.rows if row.request.id in cancelled]
        if gone:
            self._keep([i for i, row in enumerate(self.rows) if row.request.id not in cancelled])
        return gone

    def clear(self) -> list[Row]:
        rows = self.rows
        self._keep([])
        return rows

    def _keep(self, index: list[int]) -> None:
        self.rows = [self.rows[i] for i in index]
        self.h, self.c = self.h[:, index], self.c[:, index]

    def chunk(self, width: int) -> tuple[Ready | None, int]:
        """Feed up to `width` prompt characters of every reading row in one call, all but
        each prompt's last; rows with only their last character left leave as `Ready`. A
        one-character prompt (an empty one is the model's prime character) is ready at once.
        The chunk stops at the end of the shortest prompt it reads, so a short prompt is not
        padded to a long one's width: it joins the batch after the cost of its own length.
        Returns the ready rows and the chunk's width (0: no graph call)."""
        before_last = np.array([len(r.request.prompt_ids) - 1 - r.cursor for r in self.rows])
        feeding = np.flatnonzero(before_last > 0)
        if len(feeding):
            width = int(min(before_last[feeding].min(), width))
            self._feed(feeding, width)
            before_last[feeding] -= width
        else:
            width = 0
        done = np.flatnonzero(before_last == 0)
        ready = None
        if len(done):
            rows = [self.rows[i] for i in done]
            last = np.array([row.request.prompt_ids[-1] for row in rows], np.int64)
            ready = Ready(rows, self.h[:, done], self.c[:, done], last)
            self._keep(np.flatnonzero(before_last > 0).tolist())
        return ready, width

    def _feed(self, feeding: np.ndarray, width: int) -> None:
        """One graph call over the rows at `feeding`, `width` characters each (padded)."""
        tokens = np.full((len(feeding), width), PADDING_ID, np.int64)
        cursors = []
        for k, i in enumerate(feeding.tolist()):
            row = self.rows[i]
            end = min(row.cursor + width, len(row.request.prompt_ids) - 1)
            tokens[k, : end - row.cursor] = row.request.prompt_ids[row.cursor : end]
            cursors.append(end)
        runner = self.model.runner
        logits, state = runner.step(tokens, runner.state(self.h[:, feeding],
                                                         self.c[:, feeding]))
        self.h, self.c = self.h.copy(), self.c.copy()
        self.h[:, feeding], self.c[:, feeding] = state.to_numpy()
        for k, (i, end) in enumerate(zip(feeding.tolist(), cursors)):
            row = self.rows[i]
            if row.prompt_entries is not None:  # only rows that asked: echo with logprobs
                ids = row.request.prompt_ids
                row.scored(char_logprobs(logits[k, : end - row.cursor], ids[row.cursor + 1 :
                                         end + 1], [row.request.prompt_logprobs or 0]
                                         * (end - row.cursor)))
            row.cursor = end


class RunningBatch:
    """The generating rows: the decode core shared with `Model.generate` (`Rows`), plus the
    row behind each, in the same order."""

    def __init__(self, model: Model) -> None:
        runner = model.runner
        self.vocab_size = len(model.vocab)
        self.chars = model.vocab.chars
        self.core = Rows(runner, runner.state(*model.zero_state(0)),
                         np.zeros((0, self.vocab_size), np.float32), [])
        self.rows: list[Row] = []
        self.fresh: list[Row] = []  # joined, first character not sampled yet
        # Seconds from submit to the first character, of the rows that sampled theirs since
        # the engine last took them (`take_first_characters`).
        self.first_characters: list[float] = []
        # The rows that asked for logprobs (positions in the batch) and how many alternatives
        # each wants: recomputed when rows join or leave, so a step without them costs one test.
        self.logprob_rows = np.zeros(0, np.int64)
        self.logprob_tops: list[int] = []

    def _index_logprobs(self) -> None:
        wanted = [i for i, row in enumerate(self.rows) if row.entries is not None]
        self.logprob_rows = np.array(wanted, np.int64)
        self.logprob_tops = [self.rows[i].request.logprobs or 0 for i in wanted]

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, ready: Ready) -> None:
        """Ready rows join at the end; their logits are filled by the next `feed`."""
        for row in ready.rows:
            row.cursor = len(row.request.prompt_ids)
        self.core.join(self.core.runner.state(ready.h, ready.c),
                       np.zeros((len(ready.rows), self.vocab_size), np.float32),
                       [row.request.settings for row in ready.rows],
                       [row.request.prompt_ids for row in ready.rows])
        self.rows += ready.rows
        self.fresh += ready.rows
        if len(self.logprob_rows) or any(row.entries is not None for row in ready.rows):
            self._index_logprobs()

    def keep(self, keep: np.ndarray) -> None:
        self.core.keep(keep)
        self.rows = [self.rows[i] for i in keep]
        if len(self.logprob_rows):
            self._index_logprobs()

    def drop(self, cancelled: set[int]) -> list[Row]:
        """Remove the rows of cancelled requests; returns them."""
        gone = [row for row in self.rows if row.request.id in cancelled]
        if gone:
            self.keep(np.array([i for i, row in enumerate(self.rows)
                                if row.request.id not in cancelled], np.int64))
            self.fresh = [row for row in self.fresh if row.request.id not in cancelled]
        return gone

    def take_first_characters(self) -> list[float]:
        """The time-to-first-character of the rows that sampled their first since the last
        call (seconds from submit), and forget them."""
        taken, self.first_characters = self.first_characters, []
        return taken

    def sample(self, finished: Finished) -> tuple[np.ndarray, int]:
        """One character per row; rows that end leave (onto `finished`). Returns the ids of
        the rows left and how many ended."""
        wanted = self.logprob_rows
        # the raw distribution (logprobs.py), taken before sampling touches the logits
        raw = self.core.logits[wanted] if len(wanted) else None
        ids, stop_len = self.core.sample()
        if self.fresh:
            now = time.monotonic()
            self.first_characters += [now - row.request.submitted for row in self.fresh]
            self.fresh = []
        if raw is not None:
            rows = self.rows
            for i, entry in zip(wanted.tolist(), char_logprobs(raw, ids[wanted],
                                                                self.logprob_tops)):
                rows[i].entries.append(entry)  # type: ignore[union-attr]
        chars = self.chars
        ends = self.core.finished(stop_len)
        if ends is None:
            for row, i in zip(self.rows, ids.tolist()):
                row.emit(chars[i])
            return ids, 0
        for row, i, end, stop in zip(self.rows, ids.tolist(), ends.tolist(), stop_len.tolist()):
            if end:
                finished.append((row.request, row.finish(chars[i], "stop" if stop else "length",
                                                         stop)))
            else:
                row.emit(chars[i])
        keep = np.flatnonzero(~ends)
        self.keep(keep)
        return ids[keep], len(ends) - len(keep)


class PrefillBudget:
    """How much of the engine's time prompts may take while rows generate. vLLM's chunked
    prefill bounds the tokens of one step; a character model's chunk is one sequential pass
    whose cost grows with its width, so here the bound is time and the width follows it.

    Each decode step earns `share` times its own duration, while prompts wait to be read; a
    chunk is as wide as the credit buys at the measured cost of a column (at least
    `min_width`, at most `max_width`), and what it really cost is taken back (a chunk that
    ran long is repaid by the next steps). `min_width` keeps a chunk's fixed cost (the call,
    and on a busy machine the wait for onnxruntime's second thread: ~13 ms seen at load 5)
    small beside its columns. So the rows that generate keep about
    1 / (1 + share) of their pace alone, in small slices rather than one long wait behind a
    full chunk, and the prompts still get `share` / (1 + share) of the time. With no row
    generating, prompts are read every step in chunks of at most `max_chunk_s` (a request that
    arrives then waits about that long for its own prompt to be read, not a full chunk)."""

    def __init__(self, share: float, max_width: int, min_width: int = 64,
                 max_chunk_s: float = 0.025) -> None:
        self.share = share
        self.max_chunk_s = max_chunk_s
        self.max_width = max_width
        self.min_width = min(min_width, max_width)
        self.credit = 0.0  # seconds of prefill the decode steps have earned (< 0: owed)
        self.column_s: float | None = None  # measured seconds per column of a chunk

    def width(self, generating: bool) -> int:
        """How many prompt characters per row the next chunk may read; 0: none this step."""
        if self.column_s is None:  # nothing measured yet: a small chunk first
            return self.min_width
        if not generating:
            return max(self.min_width, min(int(self.max_chunk_s / self.column_s),
                                           self.max_width))
        affordable = int(self.credit / self.column_s) if self.credit > 0 else 0
        return 0 if affordable < self.min_width else min(affordable, self.max_width)

    def spent(self, seconds: float, width: int, generating: bool) -> None:
        """A chunk of `width` columns took `seconds`."""
        column_s = seconds / max(width, 1)
        self.column_s = column_s if self.column_s is None else (self.column_s + column_s) / 2
        self.credit = self.credit - seconds if generating else 0.0

    def earned(self, seconds: float, reading: bool) -> None:
        """A decode step took `seconds`; `reading`: prompts are waiting to be read. Capped at
        one full chunk, so a stretch of decoding buys no burst later."""
        if not reading:
            self.credit = min(self.credit, 0.0)
            return
        cap = self.max_width * (self.column_s or 0.0)
        self.credit = min(self.credit + self.share * seconds, cap)


class Scheduler:
    """Queue, prefill and batch of one model; see the module docstring. Not thread-safe: one
    thread (or a test) calls everything."""

    def __init__(self, model: Model, *, max_active: int, prefill_chunk: int,
                 prefill_share: float | None = None) -> None:
        self.model = model
        self.max_active = max_active
        self.prefill_chunk = prefill_chunk
        # None: a full chunk every step (deterministic: tests). A number: the prefill budget.
        self.budget = (None if prefill_share is None
                       else PrefillBudget(prefill_share, prefill_chunk))
        self.queue: deque[Request] = deque()
        self.prefill = Prefill(model)
        self.batch = RunningBatch(model)
        self._cancelled: set[int] = set()
        self.completed = 0  # requests that ended after being admitted (failures aside)
        self.steps = 0  # decode steps run
        self.prompt_chars = 0  # characters of the prompts admitted
        self.generated_chars = 0  # characters sampled

    @property
    def active(self) -> int:
        """Rows in flight: reading their prompts or generating."""
        return len(self.prefill) + len(self.batch)

    @property
    def has_work(self) -> bool:
        return bool(self.queue or self._cancelled or self.prefill or self.batch)

    def add(self, request: Request) -> None:
        """Queue a request (checked already); it is admitted by a later `step()`."""
        self.queue.append(request)

    def cancel(self, request_id: int) -> None:
        """Mark a request to leave at the next `step()`, wherever it is by then."""
        self._cancelled.add(request_id)

    def step(self) -> Finished:
        """One iteration (see the module docstring); returns the requests that ended. A
        failure of the runtime fails the rows in flight; the queue waits for the next step."""
        finished: Finished = []
        ready: Ready | None = None
        try:
            self._drop_cancelled(finished)
            self._admit()
            ready = self._retire_scored(self._read_prompts(), finished)
            if self.batch or ready:
                started = time.perf_counter()
                self._decode(ready, finished)
                if self.budget is not None:
                    self.budget.earned(time.perf_counter() - started, bool(self.prefill))
        except Exception as err:  # a failure of the runtime: fail the rows, keep serving
            failure = BardError(f"generation failed: {type(err).__name__}: {err}")
            joining = ready.rows if ready is not None else []
            self._fail([*self.batch.rows, *self.prefill.rows, *joining], failure, finished)
        return finished

    def _read_prompts(self) -> Ready | None:
        """One prefill chunk, as wide as the budget allows this step (none: no chunk)."""
        budget, generating = self.budget, bool(self.batch)
        width = self.prefill_chunk if budget is None else budget.width(generating)
        if not self.prefill or width == 0:
            return None
        started = time.perf_counter()
        ready, fed = self.prefill.chunk(width)
        if budget is not None and fed:
            budget.spent(time.perf_counter() - started, fed, generating)
        return ready

    def abort(self, error: BaseException) -> Finished:
        """End everything, queued or in flight, with `error` (the engine closing)."""
        finished: Finished = []
        self._fail([*self.batch.rows, *self.prefill.rows], error, finished)
        finished += [(request, error) for request in self.queue]
        self.queue.clear()
        self._cancelled.clear()
        return finished

    def _fail(self, rows: Iterable[Row], error: BaseException, finished: Finished) -> None:
        every = {id(row): row for row in rows}  # ready rows may have joined the batch already
        finished += [(row.request, error) for row in every.values()]
        self.batch = RunningBatch(self.model)
        self.prefill = Prefill(self.model)

    def _drop_cancelled(self, finished: Finished) -> None:
        if not self._cancelled:
            return
        cancelled, self._cancelled = self._cancelled, set()
        gone = [*self.batch.drop(cancelled), *self.prefill.drop(cancelled)]
        finished += [(row.request, row.finish(None, "cancelled", 0)) for row in gone]
        self.completed += len(gone)
        if any(request.id in cancelled for request in self.queue):
            waiting = [r for r in self.queue if r.id not in cancelled]
            finished += [(r, Completion("", "cancelled", r.prompt_chars, 0))
                         for r in self.queue if r.id in cancelled]
            self.queue = deque(waiting)

    def _retire_scored(self, ready: Ready | None, finished: Finished) -> Ready | None:
        """Rows asked for no new characters (a prompt scored for its logprobs: echo with
        max_tokens 0) end once their prompts are read; the others go on to join the batch."""
        if ready is None or all(row.request.settings.max_new for row in ready.rows):
            return ready
        going = [k for k, row in enumerate(ready.rows) if row.request.settings.max_new]
        for row in ready.rows:
            if not row.request.settings.max_new:
                finished.append((row.request, row.finish(None, "length", 0)))
                self.completed += 1
        if not going:
            return None
        return Ready([ready.rows[k] for k in going], ready.h[:, going], ready.c[:, going],
                     ready.last_ids[going])

    def _admit(self) -> None:
        free = self.max_active - self.active
        if free > 0 and self.queue:
            rows = [Row(self.queue.popleft()) for _ in range(min(free, len(self.queue)))]
            self.prompt_chars += sum(row.request.prompt_chars for row in rows)
            self.prefill.admit(rows)

    def _decode(self, ready: Ready | None, finished: Finished) -> None:
        """Sample a character for every generating row, retire the rows that end, then feed
        the survivors' characters and the ready rows' last prompt characters in one call."""
        batch = self.batch
        ids = np.zeros(0, np.int64)
        if len(batch):
            self.generated_chars += len(batch)
            ids, ended = batch.sample(finished)
            self.steps += 1
            self.completed += ended
        if ready is not None:
            batch.join(ready)
            ids = np.concatenate([ids, ready.last_ids])
        if len(batch):
            batch.core.feed(ids)
