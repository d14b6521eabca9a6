"""Request handles and the text hand-off from the engine's thread to its callers.

The scheduler (scheduler.py) puts text into a request's `Mailbox` as rows make it and the
engine finishes it; a caller, a thread or an asyncio task, waits on the same mailbox. Nothing
here knows how the batch is run: a `Request` is what was asked for (ids, options) and where
its text goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .decoding import RowSettings
from .logprobs import CharLogprob

FinishReason = Literal["stop", "length", "cancelled", "error"]

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

    text: str  # "" for a request read as a stream: its text went out piece by piece
    finish_reason: FinishReason
    prompt_chars: int
    completion_chars: int
    # Requests that asked for them (`logprobs`, `prompt_logprobs`): one entry per character of
    # `text`, and one per prompt character (the first None: nothing predicts it). A streamed
    # request's went out with its pieces, as its text did.
    logprobs: tuple[CharLogprob, ...] | None = None
    prompt_logprobs: tuple[CharLogprob, ...] | None = None


Outcome = Completion | BaseException
"""How a request ended: its completion, or the error that ended it."""


class StreamWakeups:
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


class Mailbox:
    """Hands text from the engine thread to one caller, thread or asyncio task.

    The engine appends pieces; a waiting caller is woken for the first piece at once and then
    at most every STREAM_WAKE_INTERVAL_S, or less often with many streams (STREAM_WAKES_PER_S);
    the end always wakes it. A stream costs a few wake-ups per second of text, not one per
    character.
    """

    def __init__(self, wakeups: StreamWakeups) -> None:
        self._wakeups = wakeups  # the engine's; only the engine thread wakes a mailbox
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._entries: list[CharLogprob] = []  # logprobs handed over with the pieces
        self._outcome: Outcome | None = None
        self._event = threading.Event()
        self._waker: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._want_pieces = False
        self._last_wake = -math.inf

    @property
    def finished(self) -> bool:
        return self._outcome is not None

    # -- engine side
    def put(self, piece: str, entries: list[CharLogprob] | None = None) -> None:
        """Hand over text and, for a request with logprobs, its characters' entries (prompt
        entries come with an empty piece, before any text)."""
        with self._lock:
            self._pieces.append(piece)
            if entries:
                self._entries += entries
            if self._want_pieces:
                now = time.monotonic()
                if now - self._last_wake >= self._wakeups.interval:
                    self._last_wake = now
                    self._wake_locked()

    def finish(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcome = outcome
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
        if self._entries:  # a reader of text alone drops them (_take_entries_locked: keeps)
            self._entries = []
        self._event.clear()
        return text, self._outcome is not None

    def _take_entries_locked(self) -> tuple[str, list[CharLogprob], bool]:
        entries, self._entries = self._entries, []
        text, finished = self._take_locked()
        return text, entries, finished

    def poll(self) -> tuple[str, bool]:
        """The text handed over so far and whether the request ended, without waiting."""
        with self._lock:
            return self._take_locked()

    def take(self, *, pieces: bool, timeout: float | None = None) -> tuple[str, bool]:
        """Wait for new text (pieces=True) or for the end; return (new text, finished)."""
        with self._lock:
            self._want_pieces = pieces
            if (pieces and self._pieces) or self._outcome is not None:
                return self._take_locked()
        if not self._event.wait(timeout):
            raise TimeoutError("the request did not finish within the timeout")
        with self._lock:
            return self._take_locked()

    async def atake(self, *, pieces: bool) -> tuple[str, bool]:
        text, _, finished = await self.atake_entries(pieces=pieces)
        return text, finished

    async def atake_entries(self, *, pieces: bool) -> tuple[str, list[CharLogprob], bool]:
        """`atake`, with the logprob entries handed over since the last take."""
        while True:
            with self._lock:
                self._want_pieces = pieces
                if (pieces and self._pieces) or self._outcome is not None:
                    return self._take_entries_locked()
                event = asyncio.Event()
                self._waker = (asyncio.get_running_loop(), event)
            await event.wait()

    def outcome(self) -> Completion:
        """The completion; raises the error that ended the request instead, if one did."""
        with self._lock:
            outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


_request_ids = itertools.count(1)


class Request:
    """One submitted prompt: wait for its `result()`, iterate its text, or `cancel()` it.

    `prompt_ids` are what the model reads (an empty prompt is already the prime character),
    `settings` how the row samples and ends, `include_stop` whether a matched stop string stays
    in the text. `logprobs` / `prompt_logprobs` (None: none) ask for each generated / prompt
    character's log-probability with that many alternatives (logprobs.py). `on_cancel` tells
    whoever runs the request (the engine) to drop its row."""

    def __init__(self, prompt_ids: np.ndarray, prompt_chars: int, settings: RowSettings,
                 include_stop: bool, wakeups: StreamWakeups,
                 on_cancel: Callable[[Request], None] = lambda request: None, *,
                 logprobs: int | None = None, prompt_logprobs: int | None = None) -> None:
        self.id = next(_request_ids)
        self.submitted = time.monotonic()  # for the time to its first character
        self.prompt_ids = prompt_ids
        self.prompt_chars = prompt_chars
        self.settings = settings
        self.stops = settings.stops
        self.include_stop = include_stop
        self.logprobs, self.prompt_logprobs = logprobs, prompt_logprobs
        self.mailbox = Mailbox(wakeups)
        self.cancelled = False
        # Read as a stream: the engine keeps only the text not handed over yet, and the
        # completion carries no text (the caller has had it, piece by piece).
        self.streamed = False
        self._on_cancel = on_cancel

    def cancel(self) -> None:
        """Stop generating; the row leaves the batch within one step."""
        if not self.cancelled:
            self.cancelled = True
            self._on_cancel(self)

    @property
    def finished(self) -> bool:
        return self.mailbox.finished

    def result(self, timeout: float | None = None) -> Completion:
        """Block until the request ends; raises what ended it if it failed."""
        self.mailbox.take(pieces=False, timeout=timeout)
        return self.mailbox.outcome()

    def __iter__(self) -> Iterator[str]:
        """Text as it is made; leaving the loop early cancels the request."""
        self.streamed = True
        try:
            while True:
                text, finished = self.mailbox.take(pieces=True)
                if text:
                    yield text
                if finished:
                    self.mailbox.outcome()  # raises if the request failed
                    return
        finally:
            if not self.finished:
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
        async for text, _ in self.apieces():
            if text:
                yield text

    async def apieces(self) -> AsyncIterator[tuple[str, list[CharLogprob]]]:
        """asyncio: (text, logprob entries) as they are made: the prompt's entries first (with
        prompt_logprobs; their text is ""), then each piece of text with its characters'."""
        self.streamed = True
        try:
            while True:
                text, entries, finished = await self.mailbox.atake_entries(pieces=True)
                if text or entries:
                    yield text, entries
                if finished:
                    self.mailbox.outcome()
                    return
        finally:
            if not self.finished:
                self.cancel()
