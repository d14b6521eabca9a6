"""The ASGI app: OpenAI-compatible completions, models, health and a playground page.

Every route turns HTTP into `Engine.submit` calls and engine output into HTTP; the sampling,
batching, stop strings and seeds are the SDK's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from bard.web.playground import (
    PLAYGROUND_ASSETS,
    playground_asset,
    playground_page,
    server_config,
)
from bard_sdk import BardError, Engine, EngineClosed, EngineOverloaded, Request
from bard_sdk.engine import Completion
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.requests import Request as HttpRequest

from .openai_api import (
    CompletionRequest,
    choice,
    completion_body,
    completion_id,
    error_body,
    model_card,
    now,
    usage,
)

# SDK argument names as OpenAI calls them, for the `param` of an error body.
SDK_PARAMS = {"max_new_chars": "max_tokens", "temperature": "temperature", "top_k": "top_k",
              "top_p": "top_p", "stop": "stop", "seed": "seed", "prompt": "prompt"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, kind, param, code)


def json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def param_of(error: Exception) -> str:
    """Which request field an SDK argument error is about (its message starts with the name)."""
    message = str(error)
    if "vocabulary" in message:
        return "prompt" if "stop" not in message else "stop"
    for name, field in SDK_PARAMS.items():
        if message.startswith(name):
            return field
    return "prompt"


def create_app(engine: Engine, model_id: str, *, max_tokens_limit: int = 100_000,
               max_prompt_chars: int = 100_000,
               replica: dict[str, Any] | None = None) -> FastAPI:
    """The service for one engine; closing the app (lifespan end) closes the engine.
    `replica` (which process of several serves: Ray Serve) is reported by /health."""
    created = now()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="bard serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_: HttpRequest, err: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if err.status in (429, 503) else None
        return JSONResponse(err.body, status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: HttpRequest, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("request body is not valid JSON"), status_code=400)
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = location[0] if location else None
        where = ".".join(location) or "body"
        message = f"{where}: {first.get('msg', 'invalid value')}"
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.get("/health")
    async def health() -> JSONResponse:
        status = 503 if engine.closed else 200
        body = {"status": "closed" if engine.closed else "ok", "model": model_id,
                **engine.stats()}
        if replica is not None:
            body["replica"] = replica
        return JSONResponse(body, status_code=status)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(model_id, created)]}

    @app.get("/v1/models/{name}")
    async def one_model(name: str) -> dict[str, Any]:
        if name != model_id:
            raise ApiError(404, f"model {name!r} not found; this server serves {model_id!r}",
                           param="model", code="model_not_found")
        return model_card(model_id, created)

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> str:
        return playground_page()  # the writing room (bard.web), talking to this server

    @app.get("/bard-site.json")
    async def playground_config() -> JSONResponse:
        return JSONResponse(server_config(model_id))

    for name in PLAYGROUND_ASSETS:
        app.add_api_route(f"/{name}", asset_route(name), methods=["GET"])

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> JSONResponse | StreamingResponse:
        if body.model != model_id:
            raise ApiError(404, f"model {body.model!r} not found; this server serves "
                                f"{model_id!r}", param="model", code="model_not_found")
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        if max_tokens > max_tokens_limit:
            raise ApiError(400, f"max_tokens must be at most {max_tokens_limit}",
                           param="max_tokens")
        if any(len(p) > max_prompt_chars for p in body.prompts):
            raise ApiError(400, f"prompt is longer than {max_prompt_chars} characters",
                           param="prompt")
        requests = submit_all(engine, body, max_tokens)
        ident, stamp = completion_id(), now()
        if body.stream:
            return StreamingResponse(sse_events(requests, body, ident, stamp, model_id),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            results = await asyncio.gather(*(r.aresult() for r in requests))
        except BardError as err:
            raise ApiError(500, str(err), kind="server_error") from None
        finally:
            for request in requests:
                request.cancel()  # no-op for finished ones; frees rows if the client left
        prompts = body.prompts
        choices = [choice(i, (prompts[i // body.n] if body.echo else "") + r.text,
                          r.finish_reason) for i, r in enumerate(results)]
        return JSONResponse(completion_body(ident, model_id, stamp, choices,
                                            usage_of(prompts, results)))

    return app


def asset_route(name: str) -> Callable[[], Coroutine[Any, Any, Response]]:
    async def asset() -> Response:
        text, media_type = playground_asset(name)
        return Response(text, media_type=media_type)
    return asset


def usage_of(prompts: list[str], results: list[Completion]) -> dict[str, int]:
    return usage(sum(len(p) for p in prompts), sum(r.completion_chars for r in results))


def submit_all(engine: Engine, body: CompletionRequest, max_tokens: int) -> list[Request]:
    """One engine request per (prompt, sample); choice k gets seed + k, as the SDK's batches
    do. All or nothing: if one is refused, those already submitted are cancelled."""
    submitted: list[Request] = []
    try:
        for k in range(len(body.prompts) * body.n):
            submitted.append(engine.submit(
                body.prompts[k // body.n], max_tokens, temperature=body.temperature
                if body.temperature is not None else 1.0, top_k=body.top_k, top_p=body.top_p,
                stop=body.stop, seed=None if body.seed is None else body.seed + k,
                include_stop=False))
    except EngineOverloaded as err:
        cancel_all(submitted)
        raise ApiError(429, str(err), kind="rate_limit_error", code="engine_overloaded") from None
    except EngineClosed as err:
        cancel_all(submitted)
        raise ApiError(503, str(err), kind="server_error") from None
    except ValueError as err:
        cancel_all(submitted)
        raise ApiError(400, str(err), param=param_of(err)) from None
    return submitted


def cancel_all(requests: list[Request]) -> None:
    for request in requests:
        request.cancel()


async def sse_events(requests: list[Request], body: CompletionRequest, ident: str,
                     created: int, model_id: str) -> AsyncIterator[str]:
    """Server-sent events: text chunks per choice as the engine hands them over (paced by
    its STREAM_WAKE_INTERVAL_S and STREAM_WAKES_PER_S), a final chunk per choice with its
    finish_reason, optional usage, then `data: [DONE]`. A client that disconnects cancels
    every row of the request."""
    results: list[Completion] = []
    try:
        async for index, text, done, error in merged_pieces(requests, body):
            if error is not None:
                yield "data: " + json_dumps(error_body(str(error), "server_error")) + "\n\n"
                return
            if done is not None:
                results.append(done)
            chunk = completion_body(ident, model_id, created,
                                    [choice(index, text, done and done.finish_reason)], None)
            yield "data: " + json_dumps(chunk) + "\n\n"
        if body.stream_options is not None and body.stream_options.include_usage:
            final = completion_body(ident, model_id, created, [],
                                    usage_of(body.prompts, results))
            yield "data: " + json_dumps(final) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        cancel_all(requests)


Piece = tuple[int, str, Completion | None, BaseException | None]


async def request_pieces(index: int, request: Request, body: CompletionRequest
                         ) -> AsyncIterator[Piece]:
    """(choice index, new text, the completion at the end, an error) for one request."""
    try:
        if body.echo:
            yield index, body.prompts[index // body.n], None, None
        async for text in request:
            yield index, text, None, None
        yield index, "", await request.aresult(), None
    except BardError as err:
        yield index, "", None, err


async def merged_pieces(requests: list[Request], body: CompletionRequest
                        ) -> AsyncIterator[Piece]:
    """Every request's pieces as they come. One request (the usual case) is read directly;
    several are pumped by one task each into a queue."""
    if len(requests) == 1:
        async for piece in request_pieces(0, requests[0], body):
            yield piece
        return
    queue: asyncio.Queue[Piece | None] = asyncio.Queue()

    async def pump(index: int, request: Request) -> None:
        try:
            async for piece in request_pieces(index, request, body):
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
