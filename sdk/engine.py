"""`Engine`: many callers share one model through one continuously batched decode loop.

A recurrent model's whole per-sequence state is a fixed-size (h, c), so requests can join and
leave a running batch between any two steps (iteration-level scheduling, as in Orca and vLLM).
One background thread owns the batch. Each iteration it

1. admits queued requests (up to `max_active` rows in flight),
2. runs one prefill chunk for every row still reading its prompt (at most `prefill_chunk`
   characters per row, so a long prompt never stalls the rows that are generating),
3. runs one decode step for every generating row: sample, deliver, retire finished rows, feed.

Each row samples exactly as `Model.generate` does alone (same prefill semantics, same random
stream keyed by (seed, step), same stop rule), so a request's text equals
`model.generate(prompt, ..., seed=s)` with the same arguments, whatever else is in the batch.

Callers are threads (`generate`, `stream`, `submit`) or asyncio tasks (`agenerate`, `astream`).
The queue and the batch are bounded: past them `submit` raises `EngineOverloaded` at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .arguments import integer, string
from .decoding import Rows, RowSettings
from .errors import BardError, EngineClosed, EngineOverloaded
from .generation import PADDING_ID
from .model import Model, check_seed
from .vocab import OnUnknown

FinishReason = Literal["stop", "length", "cancelled", "error"]

DEFAULT_MAX_ACTIVE = 64
DEFAULT_MAX_QUEUED = 256
DEFAULT_PREFILL_CHUNK = 256
# A streaming caller is woken for new text at once, then at most this often: a character
# model makes a character per row every millisecond or so, and a wake-up per character per
# caller would spend the cores on thread switches instead of on the model. 30 ms (33 updates a
# second, smooth to the eye) against 10 ms: 32 HTTP streams on 2 cores went from 2.8k to 3.8k
# chars/s, the server's CPU per character down 22% and the clients' 41% (BENCHMARKS.md,
# "Serving").
STREAM_WAKE_INTERVAL_S = 0.03
# ... and with many streams, all of them together are woken at most this often per second (the
# interval grows with the rows: 128 streams get text every 128 ms): each wake-up costs the
# caller's side a fixed amount (an HTTP event, a thread switch), whatever text it carries.
STREAM_WAKES_PER_S = 1000


@dataclass(frozen=True)
class Completion:
    """What one request produced, and why it ended."""

    text: str
    finish_reason: FinishReason
    prompt_chars: int
    completion_chars: int


class _StreamWakeups:
    """How often a streaming caller is woken (`interval`, paced by the rows in the batch), and
    the asyncio wake-ups of one engine step, sent as one `call_soon_threadsafe` per event loop:
    each call writes to the loop's self-pipe, and 128 streams would otherwise cost 128 system
    calls and loop wake-ups per step."""

    def __init__(self) -> None:
        self._pending: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
        self.interval = STREAM_WAKE_INTERVAL_S  # between two wake-ups of one stream

    def pace(self, streams: int) -> None:
        self.interval = max(STREAM_WAKE_INTERVAL_S, streams / STREAM_WAKES_PER_S)

    def add(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self._pending.setdefault(loop, []).append(event)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for loop, events in pending.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_set_all, events)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


class _Mailbox:
    """Hands text from the engine thread to one caller, thread or asyncio task.

    The engine appends pieces; a waiting caller is woken for the first piece at once and then
    at most every STREAM_WAKE_INTERVAL_S, or less often with many streams (STREAM_WAKES_PER_S);
    the end always wakes it. A stream costs a few wake-ups per second of text, not one per
    character.
    """

    def __init__(self, wakeups: _StreamWakeups) -> None:
        self._wakeups = wakeups  # the engine's; only the engine thread wakes a mailbox
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._finished: Completion | None = None
        self._error: BaseException | None = None
        self._event = threading.Event()
        self._waker: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._want_pieces = False
        self._last_wake = -math.inf

    # -- engine side
    def put(self, piece: str) -> None:
        with self._lock:
            self._pieces.append(piece)
            if self._want_pieces:
                now = time.monotonic()
                if now - self._last_wake >= self._wakeups.interval:
                    self._last_wake = now
                    self._wake_locked()

    def finish(self, completion: Completion | None, error: BaseException | None = None) -> None:
        with self._lock:
            self._finished, self._error = completion, error
            self._wake_locked()

    def _wake_locked(self) -> None:
        self._event.set()
        if self._waker is not None:
            loop, event = self._waker
            self._waker = None
            self._wakeups.add(loop, event)

    # -- caller side
    def _take_locked(self) -> tuple[str, bool]:
        text = "".join(self._pieces)
        self._pieces.clear()
        self._event.clear()
        return text, self._finished is not None or self._error is not None

    def take(self, *, pieces: bool, timeout: float | None = None) -> tuple[str, bool]:
        """Wait for new text (pieces=True) or for the end; return (new text, finished)."""
        with self._lock:
            self._want_pieces = pieces
            if (pieces and self._pieces) or self._finished or self._error:
                return self._take_locked()
        if not self._event.wait(timeout):
            raise TimeoutError("the request did not finish within the timeout")
        with self._lock:
            return self._take_locked()

    async def atake(self, *, pieces: bool) -> tuple[str, bool]:
        while True:
            with self._lock:
                self._want_pieces = pieces
                if (pieces and self._pieces) or self._finished or self._error:
                    return self._take_locked()
                event = asyncio.Event()
                self._waker = (asyncio.get_running_loop(), event)
            await event.wait()

    def outcome(self) -> Completion:
        with self._lock:
            if self._error is not None:
                raise self._error
            assert self._finished is not None
            return self._finished


class Request:
    """One submitted prompt: wait for its `result()`, iterate its text, or `cancel()` it."""

    def __init__(self, engine: Engine, ids: np.ndarray, prompt_chars: int,
                 settings: RowSettings, include_stop: bool) -> None:
        self.id = next(_request_ids)
        self._engine = engine
        self.prompt_ids = ids
        self.prompt_chars = prompt_chars
        self.settings = settings
        self.stops = settings.stops
        self.include_stop = include_stop
        self.mailbox = _Mailbox(engine._wakeups)
        self.cancelled = False

    def cancel(self) -> None:
        """Stop generating; the row leaves the batch within one step."""
        if not self.cancelled:
            self.cancelled = True
            self._engine._cancel(self)

    def result(self, timeout: float | None = None) -> Completion:
        """Block until the request ends; raises what ended it if it failed."""
        self.mailbox.take(pieces=False, timeout=timeout)
        return self.mailbox.outcome()

    def __iter__(self) -> Iterator[str]:
        """Text as it is made; leaving the loop early cancels the request."""
        try:
            while True:
                text, finished = self.mailbox.take(pieces=True)
                if text:
                    yield text
                if finished:
                    self.mailbox.outcome()  # raises if the request failed
                    return
        finally:
            if self.mailbox._finished is None:
                self.cancel()

    async def aresult(self) -> Completion:
        try:
            while True:
                _, finished = await self.mailbox.atake(pieces=False)
                if finished:
                    return self.mailbox.outcome()
        except asyncio.CancelledError:
            self.cancel()
            raise

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            while True:
                text, finished = await self.mailbox.atake(pieces=True)
                if text:
                    yield text
                if finished:
                    self.mailbox.outcome()
                    return
        finally:
            if self.mailbox._finished is None:
                self.cancel()


_request_ids = itertools.count(1)


class _Row:
    """A request inside the batch: what the engine thread tracks per row besides arrays."""

    __slots__ = ("cursor", "held", "longest_stop", "produced", "request", "sent")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.cursor = 0  # prompt characters fed so far
        self.produced: list[str] = []
        self.sent = 0  # characters handed to the caller
        self.longest_stop = max((len(s) for s in request.stops), default=0)
        # Without the stop string in the text, the last few characters wait until they
        # cannot be the start of one.
        self.held = 0 if request.include_stop else max(self.longest_stop - 1, 0)

    def emit(self, ch: str) -> None:
        """A character of a row that goes on."""
        self.produced.append(ch)
        if len(self.produced) - self.sent > self.held:
            self.request.mailbox.put("".join(self.produced[self.sent : len(self.produced)
                                                           - self.held]))
            self.sent = len(self.produced) - self.held

    def finish(self, ch: str | None, reason: FinishReason, stop_len: int) -> None:
        """The row's last character (None when cancelled) and why it ends."""
        request = self.request
        if ch is not None:
            self.produced.append(ch)
        text = "".join(self.produced)
        if reason == "stop" and not request.include_stop:
            text = text[: len(text) - stop_len]
        if len(text) > self.sent:
            request.mailbox.put(text[self.sent :])
        request.mailbox.finish(Completion(text, reason, request.prompt_chars,
                                          len(self.produced)))


class _Batch:
    """The generating rows: the decode core shared with `Model.generate` (`Rows`), plus the
    request behind each row, in the same order."""

    def __init__(self, model: Model) -> None:
        runner = model._runner
        self.core = Rows(runner, runner.state(*model.zero_state(0)),
                         np.zeros((0, len(model.vocab)), np.float32), [])
        self.rows: list[_Row] = []

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, rows: list[_Row], h: np.ndarray, c: np.ndarray, logits: np.ndarray) -> None:
        self.core.join(self.core.runner.state(h, c), logits,
                       [row.request.settings for row in rows])
        self.rows += rows

    def keep(self, keep: np.ndarray) -> None:
        self.core.keep(keep)
        self.rows = [self.rows[i] for i in keep]


class Engine:
    """Continuous batching over one `Model`: thread-safe and asyncio-friendly.

        engine = bard_sdk.Engine(model)
        engine.generate("ROMEO:", 200, temperature=0.8, seed=1)   # from any thread
        async for text in engine.astream("ROMEO:", 200): ...     # from asyncio

    `max_active` bounds the rows in the batch, `max_queued` the requests waiting for a row;
    a submit past both raises `EngineOverloaded`. `close()` (or leaving a `with` block) ends
    the loop; requests still running then fail with `EngineClosed`.
    """

    def __init__(self, model: Model, *, max_active: int = DEFAULT_MAX_ACTIVE,
                 max_queued: int = DEFAULT_MAX_QUEUED,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> None:
        for name, value in (("max_active", max_active), ("max_queued", max_queued),
                            ("prefill_chunk", prefill_chunk)):
            integer(value, name, minimum=1)
        self.model = model
        self.max_active, self.max_queued = int(max_active), int(max_queued)
        self.prefill_chunk = int(prefill_chunk)
        self._wake = threading.Condition()
        self._wakeups = _StreamWakeups()
        self._queue: deque[Request] = deque()
        self._cancelled: set[int] = set()
        self._closed = False
        self._in_flight = 0  # rows prefilling or generating (engine thread writes, under _wake)
        self.completed = 0
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="bard-engine", daemon=True)
        self._thread.start()
        _live_engines.add(self)

    # ------------------------------------------------------------------ callers

    def submit(self, prompt: str, max_new_chars: int = 200, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               stop: str | Sequence[str] | None = None, seed: int | None = None,
               on_unknown: OnUnknown = "error", replacement: str | None = None,
               include_stop: bool = True) -> Request:
        """Queue one prompt; arguments are checked here, in the caller's thread.

        `include_stop=False` leaves a matched stop string out of the text (the OpenAI API's
        rule); streamed text then holds back the few characters that could begin one.
        """
        string(prompt, "prompt")
        settings = self.model._settings(1, max_new_chars, temperature, top_k, top_p, stop,
                                        check_seed(seed))[0]
        max_new_chars = settings.max_new
        ids = self.model.encode(prompt, on_unknown, replacement)
        if not len(ids):
            ids = self.model.start_ids()
        request = Request(self, ids, len(prompt), settings, include_stop)
        with self._wake:
            if self._closed:
                raise EngineClosed("the engine is closed")
            free_rows = max(0, self.max_active - self._in_flight)
            if len(self._queue) >= self.max_queued + free_rows:
                raise EngineOverloaded(
                    f"engine overloaded: {self._in_flight} rows generating and "
                    f"{len(self._queue)} requests queued (max_active={self.max_active}, "
                    f"max_queued={self.max_queued}); retry later")
            if max_new_chars == 0:
                request.mailbox.finish(Completion("", "length", len(prompt), 0))
                return request
            self._queue.append(request)
            self._wake.notify()
        return request

    def generate(self, prompt: str, max_new_chars: int = 200, **options: object) -> str:
        """Submit and wait: the same text as `model.generate(prompt, ...)` alone."""
        return self.submit(prompt, max_new_chars, **options).result().text  # type: ignore[arg-type]

    def stream(self, prompt: str, max_new_chars: int = 200, **options: object) -> Iterator[str]:
        """Submit and iterate the text as it is made; leaving early cancels the request."""
        return iter(self.submit(prompt, max_new_chars, **options))  # type: ignore[arg-type]

    async def agenerate(self, prompt: str, max_new_chars: int = 200,
                        **options: object) -> Completion:
        """asyncio: submit and await the completion (cancelling the task cancels the row)."""
        request = self.submit(prompt, max_new_chars, **options)  # type: ignore[arg-type]
        return await request.aresult()

    def astream(self, prompt: str, max_new_chars: int = 200,
                **options: object) -> AsyncIterator[str]:
        """asyncio: submit and iterate the text as it is made."""
        return self.submit(prompt, max_new_chars, **options).__aiter__()  # type: ignore[arg-type]

    def stats(self) -> dict[str, int]:
        """Rows in flight, requests queued, requests completed, decode steps run."""
        with self._wake:
            return {"active": self._in_flight, "queued": len(self._queue),
                    "completed": self.completed, "steps": self.steps,
                    "max_active": self.max_active, "max_queued": self.max_queued}

    def close(self, timeout: float | None = 10.0) -> None:
        """End the loop; unfinished requests fail with EngineClosed. Idempotent."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cancel(self, request: Request) -> None:
        with self._wake:
            self._cancelled.add(request.id)
            self._wake.notify()

    # ------------------------------------------------------------------ engine thread

    def _run(self) -> None:
        batch = _Batch(self.model)
        reading: list[_Row] = []  # admitted rows still reading their prompts
        h_read = c_read = None
        while True:
            with self._wake:
                while not (self._closed or self._queue or self._cancelled or reading or batch):
                    self._wake.wait()
                if self._closed:
                    break
                cancelled, self._cancelled = self._cancelled, set()
                admitted: list[Request] = []
                while self._queue and self._in_flight + len(admitted) < self.max_active:
                    request = self._queue.popleft()
                    if request.id in cancelled or request.cancelled:
                        request.mailbox.finish(Completion("", "cancelled",
                                                          request.prompt_chars, 0))
                        continue
                    admitted.append(request)
                self._in_flight += len(admitted)
            ready: _Ready | None = None
            try:
                if cancelled:
                    reading, h_read, c_read = self._drop_cancelled(batch, reading, h_read,
                                                                   c_read, cancelled)
                if admitted:
                    reading, h_read, c_read = self._admit(admitted, reading, h_read, c_read)
                if reading:
                    reading, h_read, c_read, ready = self._prefill_chunk(reading, h_read,
                                                                         c_read)
                if batch or ready:
                    self._decode_step(batch, ready)
            except Exception as err:  # a failure of the runtime: fail the rows, keep serving
                failure = BardError(f"generation failed: {type(err).__name__}: {err}")
                joining = ready.rows if ready is not None else []
                every = {id(row): row for row in [*batch.rows, *reading, *joining]}
                for row in every.values():  # ready rows may have joined the batch already
                    row.request.mailbox.finish(None, failure)
                batch, reading, h_read, c_read = _Batch(self.model), [], None, None
                with self._wake:
                    self._in_flight = 0
            self._wakeups.flush()
        closed = EngineClosed("the engine was closed before this request finished")
        with self._wake:
            pending = list(self._queue)
            self._queue.clear()
        for row in [*batch.rows, *reading]:
            row.request.mailbox.finish(None, closed)
        for request in pending:
            request.mailbox.finish(None, closed)
        self._wakeups.flush()

    def _retire(self, count: int) -> None:
        with self._wake:
            self._in_flight -= count
            self.completed += count

    def _drop_cancelled(self, batch: _Batch, reading: list[_Row], h: np.ndarray | None,
                        c: np.ndarray | None, cancelled: set[int]
                        ) -> tuple[list[_Row], np.ndarray | None, np.ndarray | None]:
        gone = 0
        keep = [i for i, row in enumerate(batch.rows) if row.request.id not in cancelled]
        if len(keep) < len(batch):
            for row in batch.rows:
                if row.request.id in cancelled:
                    row.finish(None, "cancelled", 0)
            gone += len(batch) - len(keep)
            batch.keep(np.array(keep, np.int64))
        keep_reading = [i for i, row in enumerate(reading) if row.request.id not in cancelled]
        if len(keep_reading) < len(reading):
            for row in reading:
                if row.request.id in cancelled:
                    row.finish(None, "cancelled", 0)
            gone += len(reading) - len(keep_reading)
            reading = [reading[i] for i in keep_reading]
            if h is not None and c is not None:
                h, c = h[:, keep_reading], c[:, keep_reading]
        if gone:
            self._retire(gone)
        return reading, h, c

    def _admit(self, requests: list[Request], reading: list[_Row], h: np.ndarray | None,
               c: np.ndarray | None) -> tuple[list[_Row], np.ndarray, np.ndarray]:
        zeros_h, zeros_c = self.model.zero_state(len(requests))
        rows = [_Row(r) for r in requests]
        if h is None or c is None:
            return rows, zeros_h, zeros_c
        return (reading + rows, np.concatenate([h, zeros_h], axis=1),
                np.concatenate([c, zeros_c], axis=1))

    def _prefill_chunk(self, reading: list[_Row], h: np.ndarray | None, c: np.ndarray | None
                       ) -> tuple[list[_Row], np.ndarray | None, np.ndarray | None,
                                  _Ready | None]:
        """Feed up to `prefill_chunk` prompt characters of every reading row in one call, all
        but each prompt's last. Rows with only their last character left are ready: it is fed
        with the batch's next step (`_decode_step`), so a row joining costs no call of its
        own. A one-character prompt (an empty one is the model's prime character) is ready
        at once."""
        assert h is not None and c is not None
        before_last = np.array([len(r.request.prompt_ids) - 1 - r.cursor for r in reading])
        feeding = np.flatnonzero(before_last > 0)
        if len(feeding):
            width = int(min(before_last[feeding].max(), self.prefill_chunk))
            tokens = np.full((len(feeding), width), PADDING_ID, np.int64)
            for k, i in enumerate(feeding.tolist()):
                row = reading[i]
                part = row.request.prompt_ids[row.cursor : min(row.cursor + width,
                                                               len(row.request.prompt_ids) - 1)]
                tokens[k, : len(part)] = part
                row.cursor += len(part)
            runner = self.model._runner
            _, state = runner.step(tokens, runner.state(h[:, feeding], c[:, feeding]))
            h, c = h.copy(), c.copy()
            h[:, feeding], c[:, feeding] = state.to_numpy()
            before_last[feeding] -= np.minimum(before_last[feeding], width)
        done = np.flatnonzero(before_last == 0)
        ready = None
        if len(done):
            rows = [reading[i] for i in done]
            last = np.array([row.request.prompt_ids[-1] for row in rows], np.int64)
            ready = _Ready(rows, h[:, done], c[:, done], last)
        left = np.flatnonzero(before_last > 0)
        if not len(left):
            return [], None, None, ready
        return [reading[i] for i in left], h[:, left], c[:, left], ready

    def _decode_step(self, batch: _Batch, ready: _Ready | None) -> None:
        """Sample a character for every generating row, retire the rows that end, then feed
        the survivors' characters and the ready rows' last prompt characters in one call."""
        self._wakeups.pace(len(batch))
        ids = np.zeros(0, np.int64)
        if len(batch):
            ids = self._sample_step(batch)
        if ready is not None:
            for row in ready.rows:
                row.cursor = len(row.request.prompt_ids)
            batch.join(ready.rows, ready.h, ready.c,
                       np.zeros((len(ready.rows), len(self.model.vocab)), np.float32))
            ids = np.concatenate([ids, ready.last_ids])
        if len(batch):
            batch.core.feed(ids)

    def _sample_step(self, batch: _Batch) -> np.ndarray:
        """One character per row; rows that end leave. Returns the ids of the rows left."""
        ids, stop_len = batch.core.sample()
        chars = self.model.vocab.chars
        finished = batch.core.finished(stop_len)
        self.steps += 1
        if finished is None:
            for row, i in zip(batch.rows, ids.tolist()):
                row.emit(chars[i])
            return ids
        for row, i, ends, stop in zip(batch.rows, ids.tolist(), finished.tolist(),
                                      stop_len.tolist()):
            if ends:
                row.finish(chars[i], "stop" if stop else "length", stop)
            else:
                row.emit(chars[i])
        self._retire(int(finished.sum()))
        keep = np.flatnonzero(~finished)
        batch.keep(keep)
        return ids[keep]


@dataclass
class _Ready:
    """Rows whose prompts are read but for the last character, with their state."""

    rows: list[_Row]
    h: np.ndarray
    c: np.ndarray
    last_ids: np.ndarray


_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    """Interpreter exit: stop every engine's thread between two steps, not inside one."""
    for engine in list(_live_engines):
        engine.close(timeout=30.0)
