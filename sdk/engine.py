"""`Engine`: many callers share one model through one continuously batched decode loop.

The batching itself is the `Scheduler`'s (scheduler.py: queue, admission, prefill, decode,
cancellation, as plain calls with no threads); request handles and the text hand-off are in
requests.py. The engine is the thread-safe front: it checks a request in the caller's thread,
refuses it when the queue is full, and runs `Scheduler.step()` on one background thread,
finishing the requests each step ends.

Each request's text equals `model.generate(prompt, ..., seed=s)` with the same arguments,
whatever else is in the batch. Callers are threads (`generate`, `stream`, `submit`) or asyncio
tasks (`agenerate`, `astream`). The queue and the batch are bounded: past them `submit` raises
`EngineOverloaded` at once.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from .arguments import integer
from .errors import EngineClosed, EngineOverloaded
from .logprobs import checked_count
from .model import Model
from .options import GenerationOptions
from .penalties import PenaltyArguments
from .requests import (
    STREAM_WAKE_INTERVAL_S,
    STREAM_WAKES_PER_S,
    Completion,
    FinishReason,
    Request,
    StreamWakeups,
)
from .scheduler import Finished, Scheduler
from .vocab import OnUnknown

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_MAX_ACTIVE",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_PREFILL_CHUNK",
    "STREAM_WAKES_PER_S",
    "STREAM_WAKE_INTERVAL_S",
    "Completion",
    "Engine",
    "EngineObserver",
    "FinishReason",
    "Request",
]

DEFAULT_MAX_ACTIVE = 64
DEFAULT_MAX_QUEUED = 256
DEFAULT_PREFILL_CHUNK = 256
# While rows generate, prompts get at most this many times the decode steps' time (issue 21:
# a 200-character request beside 100k-character prompts within 3x its time alone, the
# prompts still read at >= 1/3 of their rate alone).
PREFILL_SHARE = 0.8


class EngineObserver(Protocol):
    """What a monitor (bard serve's /metrics) is told, on the engine's thread: the seconds
    each step took, and each request's seconds from submit to its first character. Both
    calls must be quick and must not raise."""

    def step(self, seconds: float) -> None: ...

    def first_character(self, seconds: float) -> None: ...


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
        self.scheduler = Scheduler(model, max_active=self.max_active,
                                   prefill_chunk=self.prefill_chunk,
                                   prefill_share=PREFILL_SHARE)
        # Everything below `_wake` guards: what callers hand to the loop, and what the loop
        # last published about the scheduler (which only the loop's thread touches).
        self._wake = threading.Condition()
        self._incoming: list[Request] = []
        self._cancels: list[int] = []
        self._closed = False
        self._published = {"active": 0, "queued": 0, "completed": 0, "steps": 0,
                           "prompt_chars": 0, "generated_chars": 0}
        # Told about every step when set (from any thread): see EngineObserver.
        self.observer: EngineObserver | None = None
        self._wakeups = StreamWakeups()
        self._thread = threading.Thread(target=self._run, name="bard-engine", daemon=True)
        self._thread.start()
        _live_engines.add(self)

    # ------------------------------------------------------------------ callers

    def submit(self, prompt: str, max_new_chars: int = 200, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               stop: str | Sequence[str] | None = None, seed: int | None = None,
               on_unknown: OnUnknown = "error", replacement: str | None = None,
               include_stop: bool = True, logprobs: int | None = None,
               prompt_logprobs: int | None = None,
               **penalties: Unpack[PenaltyArguments]) -> Request:
        """Queue one prompt; arguments are checked here, in the caller's thread.

        `include_stop=False` leaves a matched stop string out of the text (the OpenAI API's
        rule); streamed text then holds back the few characters that could begin one.
        `logprobs=k` / `prompt_logprobs=k` (0 to 20) give each generated / prompt character's
        log-probability under the model's raw distribution and its k likeliest alternatives
        (`Completion.logprobs` / `.prompt_logprobs`, or `Request.apieces()` for a stream);
        with `prompt_logprobs`, `max_new_chars=0` scores the prompt without generating.
        The penalties (`bard_sdk.PenaltyArguments`) apply to this request's row only (the
        logprobs stay those of the raw distribution).
        """
        options = GenerationOptions.checked(
            self.model.vocab, max_new_chars=max_new_chars, temperature=temperature,
            top_k=top_k, top_p=top_p, stop=stop, seed=seed, on_unknown=on_unknown,
            replacement=replacement, include_stop=include_stop, single_seed=True, **penalties)
        return self.submit_checked(prompt, options, logprobs=logprobs,
                                   prompt_logprobs=prompt_logprobs)

    def submit_checked(self, prompt: str, options: GenerationOptions, *,
                       logprobs: int | None = None, prompt_logprobs: int | None = None
                       ) -> Request:
        """`submit` with options already built (`GenerationOptions.checked`)."""
        ids = self.model.prompt_ids(prompt, options.on_unknown, options.replacement)
        prompt_chars = len(prompt)
        request = Request(ids, prompt_chars, options.row_settings(1)[0],
                          options.include_stop, self._wakeups, on_cancel=self._cancel,
                          logprobs=checked_count(logprobs, "logprobs"),
                          prompt_logprobs=checked_count(prompt_logprobs, "prompt_logprobs"))
        with self._wake:
            if self._closed:
                raise EngineClosed("the engine is closed")
            active = self._published["active"]
            queued = self._published["queued"] + len(self._incoming)
            if queued >= self.max_queued + max(0, self.max_active - active):
                raise EngineOverloaded(
                    f"engine overloaded: {active} rows generating and {queued} requests "
                    f"queued (max_active={self.max_active}, max_queued={self.max_queued}); "
                    "retry later")
            if options.max_new_chars == 0 and request.prompt_logprobs is None:
                request.mailbox.finish(Completion("", "length", prompt_chars, 0,
                                                  None if logprobs is None else ()))
                return request
            self._incoming.append(request)
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
        """Rows in flight, requests queued, requests completed, decode steps run, and the
        characters read from prompts and generated since the engine started."""
        with self._wake:
            stats = dict(self._published)
            stats["queued"] += len(self._incoming)
        return {**stats, "max_active": self.max_active, "max_queued": self.max_queued}

    @property
    def completed(self) -> int:
        return self.stats()["completed"]

    @property
    def steps(self) -> int:
        return self.stats()["steps"]

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
            self._cancels.append(request.id)
            self._wake.notify()

    # ------------------------------------------------------------------ the loop's thread

    def _run(self) -> None:
        scheduler = self.scheduler
        while self._take_work():
            self._wakeups.pace(len(scheduler.batch))
            started = time.perf_counter()
            finished = scheduler.step()
            seconds = time.perf_counter() - started
            firsts = scheduler.batch.take_first_characters()
            observer = self.observer
            if observer is not None:
                observer.step(seconds)
                for first in firsts:
                    observer.first_character(first)
            self._finish(finished)
        with self._wake:
            for request in self._incoming:
                scheduler.add(request)
            self._incoming.clear()
        self._finish(scheduler.abort(
            EngineClosed("the engine was closed before this request finished")))

    def _take_work(self) -> bool:
        """Wait until there is something to do; hand the callers' requests and cancellations
        to the scheduler. False once the engine is closed."""
        scheduler = self.scheduler
        with self._wake:
            while not (self._closed or self._incoming or self._cancels or scheduler.has_work):
                self._wake.wait()
            if self._closed:
                return False
            for request in self._incoming:
                scheduler.add(request)
            for request_id in self._cancels:
                scheduler.cancel(request_id)
            self._incoming.clear()
            self._cancels.clear()
            self._publish()
        return True

    def _publish(self) -> None:
        scheduler = self.scheduler
        self._published = {"active": scheduler.active, "queued": len(scheduler.queue),
                           "completed": scheduler.completed, "steps": scheduler.steps,
                           "prompt_chars": scheduler.prompt_chars,
                           "generated_chars": scheduler.generated_chars}

    def _finish(self, finished: Finished) -> None:
        """Publish the counts, then hand each ended request its outcome, so a caller woken by
        its result sees its row gone from `stats()`."""
        with self._wake:
            self._publish()
        for request, outcome in finished:
            request.mailbox.finish(outcome)
        self._wakeups.flush()


_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    """Interpreter exit: stop every engine's thread between two steps, not inside one."""
    for engine in list(_live_engines):
        engine.close(timeout=30.0)
