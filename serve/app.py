"""The ASGI app: OpenAI-compatible completions and chat, models, health and a playground page.

Routes only delegate: completions to completions.py, chat to chat.py, bodies to openai_api.py
and chat_api.py; the sampling, batching, stop strings and seeds are the SDK's engine's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from bard.web.playground import (
    PLAYGROUND_ASSETS,
    playground_asset,
    playground_page,
    server_config,
)
from bard_sdk import Engine
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as HttpRequest

from .chat import chat_complete
from .chat_api import ChatCompletionRequest
from .completions import Limits, complete
from .guard import ApiKey, BodyLimit, Guard, HostCheck
from .metrics import CountRequests, ServerMetrics
from .openai_api import ApiError, CompletionRequest, error_body, model_card, now
from .openapi_doc import FrontDoor, install
from .tokenizer_api import (
    DetokenizeRequest,
    TokenizeRequest,
    detokenize,
    tokenize,
    tokenizer_info,
)

__all__ = ["ApiError", "create_app"]


async def api_error(_: HttpRequest, err: Exception) -> JSONResponse:
    assert isinstance(err, ApiError)
    headers = {"Retry-After": "1"} if err.status in (429, 503) else None
    return JSONResponse(err.body, status_code=err.status, headers=headers)


async def invalid_request(_: HttpRequest, err: Exception) -> JSONResponse:
    """pydantic's refusal of a request body, as an OpenAI error naming the field."""
    assert isinstance(err, RequestValidationError)
    first = err.errors()[0]
    if first.get("type") == "json_invalid":
        return JSONResponse(error_body("request body is not valid JSON"), status_code=400)
    location = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = location[0] if location else None
    where = ".".join(location) or "body"
    message = f"{where}: {first.get('msg', 'invalid value')}"
    return JSONResponse(error_body(message, param=param), status_code=400)


async def http_error(_: HttpRequest, err: Exception) -> JSONResponse:
    """Starlette's own refusals (unknown route, wrong method, a body over the limit), in
    OpenAI's error shape instead of `{"detail": ...}`."""
    assert isinstance(err, StarletteHTTPException)
    kind = "invalid_request_error" if err.status_code < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
        err.status_code)
    return JSONResponse(error_body(str(err.detail), kind, code=code),
                        status_code=err.status_code, headers=err.headers)


class Routes:
    """The endpoints of one served model; each delegates to the layer that does the work."""

    def __init__(self, engine: Engine, model_id: str, limits: Limits,
                 replica: dict[str, Any] | None) -> None:
        self.engine, self.model_id, self.limits, self.replica = engine, model_id, limits, replica
        self.created = now()

    async def health(self) -> JSONResponse:
        closed = self.engine.closed
        body = {"status": "closed" if closed else "ok", "model": self.model_id,
                **self.engine.stats()}
        if self.replica is not None:
            body["replica"] = self.replica
        return JSONResponse(body, status_code=503 if closed else 200)

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [model_card(self.model_id, self.created)]}

    async def one_model(self, name: str) -> dict[str, Any]:
        if name != self.model_id:
            raise ApiError(404, f"model {name!r} not found; this server serves "
                                f"{self.model_id!r}", param="model", code="model_not_found")
        return model_card(self.model_id, self.created)

    async def playground(self) -> HTMLResponse:
        """The writing room (bard.web), talking to this server. Nothing is templated into the
        page: the model id reaches it inside bard-site.json, and the page puts it in as text."""
        return HTMLResponse(playground_page())

    async def playground_config(self) -> JSONResponse:
        return JSONResponse(server_config(self.model_id))

    async def completions(self, body: CompletionRequest, http: HttpRequest) -> Response:
        return await complete(self.engine, body, self.model_id, self.limits,
                              lambda: client_gone(http))

    async def chat_completions(self, body: ChatCompletionRequest, http: HttpRequest
                               ) -> Response:
        return await chat_complete(self.engine, body, self.model_id, self.limits,
                                   lambda: client_gone(http))

    async def tokenize(self, body: TokenizeRequest) -> dict[str, Any]:
        return tokenize(body, self.engine.model.vocab, self.model_id,
                        self.limits.max_prompt_chars)

    async def detokenize(self, body: DetokenizeRequest) -> dict[str, Any]:
        return detokenize(body, self.engine.model.vocab, self.model_id)

    async def tokenizer_info(self) -> dict[str, Any]:
        return tokenizer_info(self.engine.model.vocab, self.limits.max_prompt_chars)


async def client_gone(http: HttpRequest) -> None:
    """Returns once the client disconnects: the body is read, so the next ASGI message is
    `http.disconnect` (or the end of the response)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def create_app(engine: Engine, model_id: str, *, max_tokens_limit: int = 100_000,
               max_prompt_chars: int = 100_000, max_rows: int | None = None,
               replica: dict[str, Any] | None = None, guard: Guard | None = None) -> FastAPI:
    """The service for one engine; closing the app (lifespan end) closes the engine.
    `replica` (which process of several serves: Ray Serve) is reported by /health.
    `max_rows`: rows one request may hold (default: half the engine's batch, at least 1)."""
    rows = max(1, engine.max_active // 2) if max_rows is None else max_rows
    routes = Routes(engine, model_id, Limits(max_tokens_limit, max_prompt_chars, rows), replica)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="bard serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    guard = guard or Guard()
    add_guard(app, guard)
    install(app, FrontDoor(guard.api_key is not None, guard.allowed_hosts is not None))
    metrics = ServerMetrics(engine, None if replica is None else str(replica["id"]))
    app.add_middleware(CountRequests, metrics=metrics, routes=app.router.routes)  # outermost
    app.add_api_route("/metrics", metrics.endpoint, methods=["GET"])
    app.add_api_route("/health", routes.health, methods=["GET"])
    app.add_api_route("/v1/models", routes.models, methods=["GET"])
    app.add_api_route("/v1/models/{name}", routes.one_model, methods=["GET"])
    app.add_api_route("/", routes.playground, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route("/bard-site.json", routes.playground_config, methods=["GET"])
    for name in PLAYGROUND_ASSETS:
        app.add_api_route(f"/{name}", asset_route(name), methods=["GET"])
    app.add_api_route("/v1/completions", routes.completions, methods=["POST"],
                      response_model=None)
    app.add_api_route("/v1/chat/completions", routes.chat_completions, methods=["POST"],
                      response_model=None)
    # vLLM's tokenizer routes (lm-evaluation-harness's tokenizer_backend=remote)
    app.add_api_route("/tokenize", routes.tokenize, methods=["POST"])
    app.add_api_route("/detokenize", routes.detokenize, methods=["POST"])
    app.add_api_route("/tokenizer_info", routes.tokenizer_info, methods=["GET"])
    return app


def asset_route(name: str) -> Callable[[], Coroutine[Any, Any, Response]]:
    """A route serving one file of the writing room (bard.web)."""
    async def asset() -> Response:
        text, media_type = playground_asset(name)
        return Response(text, media_type=media_type)
    return asset


def add_guard(app: FastAPI, guard: Guard) -> None:
    """The front door, outermost first: Host check, CORS (off unless origins are named), API
    key, body limit. (Starlette runs the middleware added last first.)"""
    app.add_middleware(BodyLimit, limit=guard.max_body_bytes, timeout_s=guard.body_timeout_s)
    if guard.api_key is not None:
        app.add_middleware(ApiKey, key=guard.api_key)
    if guard.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(guard.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    if guard.allowed_hosts is not None:
        app.add_middleware(HostCheck, hosts=guard.allowed_hosts)
