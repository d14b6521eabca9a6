"""Completions over the engine: check a request against the server's limits, submit one
engine request per (prompt, sample), and turn the engine's output into OpenAI bodies or
server-sent events. The routes (app.py) only call `complete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bard_sdk import BardError, Engine, EngineClosed, EngineOverloaded, Request
from bard_sdk.engine import Completion
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .logprobs import LogprobCursor, legacy_logprobs
from .openai_api import (
    ApiError,
    CompletionRequest,
    choice,
    completion_body,
    completion_id,
    error_body,
    now,
    usage,
)
from .tokenizer_api import decoded

# SDK argument names as OpenAI calls them, for the `param` of an error body.
SDK_PARAMS = {"max_new_chars": "max_tokens", "temperature": "temperature", "top_k": "top_k",
              "top_p": "top_p", "stop": "stop", "seed": "seed", "prompt": "prompt",
              "min_p": "min_p", "frequency_penalty": "frequency_penalty",
              "presence_penalty": "presence_penalty", "repetition_penalty": "repetition_penalty",
              "logit_bias": "logit_bias"}


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, beyond the engine's own."""

    max_tokens: int = 100_000
    max_prompt_chars: int = 100_000
    # Rows (prompts x n) one request may hold: a fair share of the batch, so one client
    # cannot take every row; more is a 400 (it could never be served fairly, or at all).
    max_rows: int = 32
    # Logprob entries (characters described x (logprobs + 1)) one request may ask for: what
    # the server holds and sends for it stays bounded (100k echoed characters with 5).
    max_logprob_entries: int = 600_000


def json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def param_of(error: BardError) -> str:
    """Which request field an SDK argument error is about: the SDK names its parameter."""
    return SDK_PARAMS.get(getattr(error, "param", None) or "prompt", "prompt")


def check_model(name: str, model_id: str) -> None:
    if name != model_id:
        raise ApiError(404, f"model {name!r} not found; this server serves {model_id!r}",
                       param="model", code="model_not_found")


def checked_max_tokens(body: CompletionRequest, model_id: str, limits: Limits) -> int:
    """The request's max_tokens, once the model and the sizes are within the limits."""
    check_model(body.model, model_id)
    max_tokens = 16 if body.max_tokens is None else body.max_tokens
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens must be at most {limits.max_tokens}",
                       param="max_tokens")
    rows = len(body.prompts) * body.n
    if rows > limits.max_rows:
        raise ApiError(400, f"this request asks for {rows} rows (prompts x n); one request may "
                            f"hold at most {limits.max_rows} on this server", param="n")
    if any(len(p) > limits.max_prompt_chars for p in body.prompts):
        raise ApiError(400, f"prompt is longer than {limits.max_prompt_chars} characters",
                       param="prompt")
    if body.logprobs is not None:
        described = (sum(map(len, body.prompts)) * body.n if body.echo else 0) + rows * max_tokens
        if described * (body.logprobs + 1) > limits.max_logprob_entries:
            raise ApiError(400, f"this request asks for logprobs of {described} characters "
                                f"with {body.logprobs} alternatives each; one request may ask "
                                f"for {limits.max_logprob_entries} entries (characters x "
                                "(logprobs + 1)) on this server", param="logprobs")
    return max_tokens


def read_token_prompts(body: CompletionRequest, engine: Engine) -> None:
    """Token-id prompts become their text; ids outside the vocabulary are a 400 naming them."""
    token_prompts = body.token_prompts
    if token_prompts is not None:
        vocab = engine.model.vocab
        body.read_tokens([decoded(vocab, ids, "prompt") for ids in token_prompts])


Disconnected = Callable[[], Awaitable[None]]
"""Returns when the client has gone (the ASGI `http.disconnect` message)."""


async def complete(engine: Engine, body: CompletionRequest, model_id: str,
                   limits: Limits, disconnected: Disconnected) -> Response:
    """POST /v1/completions: the whole response, or its event stream."""
    read_token_prompts(body, engine)
    requests = submit_all(engine, body, checked_max_tokens(body, model_id, limits))
    ident, stamp = completion_id(), now()
    if body.stream:
        return event_stream(sse_events(requests, body, ident, stamp, model_id,
                                       engine.model.vocab.chars))
    results = await finished(requests, disconnected)
    if results is None:
        return Response(status_code=499)  # nobody is there to read it
    prompts = body.prompts
    chars = engine.model.vocab.chars
    choices = [choice(i, (prompts[i // body.n] if body.echo else "") + r.text, r.finish_reason,
                      None if body.logprobs is None else legacy_logprobs(
                          [*(r.prompt_logprobs or ()), *(r.logprobs or ())], chars))
               for i, r in enumerate(results)]
    return JSONResponse(completion_body(ident, model_id, stamp, choices,
                                        usage_of(prompts, results)))


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def finished(requests: list[Request], disconnected: Disconnected
                   ) -> list[Completion] | None:
    """Every request's completion (None: the client left), engine failures as ApiErrors;
    the rows are cancelled on the way out (a no-op for finished ones)."""
    try:
        return await results_unless_gone(requests, disconnected)
    except EngineClosed as err:  # the server is shutting down (its drain period is over)
        raise ApiError(503, f"the server is shutting down: {err}", kind="server_error",
                       code="shutting_down") from None
    except BardError as err:
        raise ApiError(500, str(err), kind="server_error") from None
    finally:
        cancel_all(requests)


async def results_unless_gone(requests: list[Request], disconnected: Disconnected
                              ) -> list[Completion] | None:
    """Every request's completion, or None as soon as the client disconnects (the caller
    then cancels the rows: they leave the batch within one engine step)."""
    gathered = asyncio.ensure_future(asyncio.gather(*(r.aresult() for r in requests)))
    gone = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((gathered, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not gathered.done():
        gathered.cancel()
        with contextlib.suppress(asyncio.CancelledError, BardError):
            await gathered
        return None
    return gathered.result()


def usage_of(prompts: list[str], results: list[Completion]) -> dict[str, int]:
    return usage(sum(len(p) for p in prompts), sum(r.completion_chars for r in results))


def submit_all(engine: Engine, body: CompletionRequest, max_tokens: int) -> list[Request]:
    """One engine request per (prompt, sample); choice k gets seed + k, as the SDK's batches
    do. All or nothing: if one is refused, those already submitted are cancelled."""
    sampling = body.sampling_arguments(len(engine.model.vocab))
    submitted: list[Request] = []
    try:
        for k in range(len(body.prompts) * body.n):
            submitted.append(engine.submit(
                body.prompts[k // body.n], max_tokens,
                seed=None if body.seed is None else body.seed + k, include_stop=False,
                logprobs=body.logprobs, prompt_logprobs=body.logprobs if body.echo else None,
                **sampling))
    except EngineOverloaded as err:
        cancel_all(submitted)
        raise ApiError(429, str(err), kind="rate_limit_error", code="engine_overloaded") from None
    except EngineClosed as err:
        cancel_all(submitted)
        raise ApiError(503, str(err), kind="server_error") from None
    except BardError as err:  # the SDK's argument errors, naming their parameter
        cancel_all(submitted)
        raise ApiError(400, str(err), param=param_of(err)) from None
    return submitted


def cancel_all(requests: list[Request]) -> None:
    for request in requests:
        request.cancel()


async def sse_events(requests: list[Request], body: CompletionRequest, ident: str,
                     created: int, model_id: str, chars: list[str]) -> AsyncIterator[str]:
    """Server-sent events: text chunks per choice as the engine hands them over (paced by
    its STREAM_WAKE_INTERVAL_S and STREAM_WAKES_PER_S), each with its characters' logprobs
    when asked, a final chunk per choice with its finish_reason, optional usage, then
    `data: [DONE]`. A client that disconnects cancels every row of the request."""
    results: list[Completion] = []
    try:
        async for index, text, logprobs, done, error in merged_pieces(requests, body, chars):
            if error is not None:
                yield "data: " + json_dumps(error_body(str(error), "server_error")) + "\n\n"
                return
            if done is not None:
                results.append(done)
            chunk = completion_body(ident, model_id, created,
                                    [choice(index, text, done and done.finish_reason,
                                            logprobs)], None)
            yield "data: " + json_dumps(chunk) + "\n\n"
        if body.stream_options is not None and body.stream_options.include_usage:
            final = completion_body(ident, model_id, created, [],
                                    usage_of(body.prompts, results))
            yield "data: " + json_dumps(final) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        cancel_all(requests)


Piece = tuple[int, str, dict[str, Any] | None, Completion | None, BaseException | None]
"""(choice index, new text, its logprobs object, the completion at the end, an error)"""


async def request_pieces(index: int, request: Request, body: CompletionRequest,
                         chars: list[str]) -> AsyncIterator[Piece]:
    """The pieces of one request: the echoed prompt (with its logprobs once the prefill has
    scored it), then its text as it comes, then its end."""
    try:
        if body.logprobs is None:
            if body.echo:
                yield index, body.prompts[index // body.n], None, None, None
            async for text in request:
                yield index, text, None, None, None
        else:
            async for piece in logprob_pieces(index, request, body, chars):
                yield piece
        yield index, "", None, await request.aresult(), None
    except BardError as err:
        yield index, "", None, None, err


async def logprob_pieces(index: int, request: Request, body: CompletionRequest,
                         chars: list[str]) -> AsyncIterator[Piece]:
    """`request_pieces` of a request with logprobs: each text with its characters' entries."""
    cursor = LogprobCursor(chars)
    prompt = body.prompts[index // body.n] if body.echo else None
    if prompt == "":
        yield index, "", cursor.take(0), None, None
        prompt = None
    async for text, entries in request.apieces():
        cursor.add(entries)
        if prompt is not None and len(cursor.pending) >= len(prompt):
            yield index, prompt, cursor.take(len(prompt)), None, None
            prompt = None
        if text:
            yield index, text, cursor.take(len(text)), None, None


async def merged_pieces(requests: list[Request], body: CompletionRequest, chars: list[str]
                        ) -> AsyncIterator[Piece]:
    """Every request's pieces as they come. One request (the usual case) is read directly;
    several are pumped by one task each into a queue."""
    if len(requests) == 1:
        async for piece in request_pieces(0, requests[0], body, chars):
            yield piece
        return
    queue: asyncio.Queue[Piece | None] = asyncio.Queue()

    async def pump(index: int, request: Request) -> None:
        try:
            async for piece in request_pieces(index, request, body, chars):
                await queue.put(piece)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    try:
        remaining = len(tasks)
        while remaining:
            piece = await queue.get()
            if piece is None:
                remaining -= 1
            else:
                yield piece
    finally:
        for task in tasks:
            task.cancel()
