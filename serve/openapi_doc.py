"""`/openapi.json` that tells the truth: every status each route can answer, with its body.

FastAPI documents 200 and, for any route with parameters, a 422 that bard never sends (its
validation errors are 400s in OpenAI's error shape). `openapi_document` starts from FastAPI's
document and replaces each operation's error responses with what the server really answers:

- what a route itself answers (`ROUTE_CODES`), and 400 for every route that reads a body;
- the front door's refusals, on the routes they guard: 421 (Host check, on a loopback bind),
  401 (API key, /v1 routes when one is set), 413 (body over --max-body-bytes: a declared
  Content-Length is refused on any route), 408 (a body slower than --body-timeout-s: routes
  that read one), 503 (over --max-connections: uvicorn refuses before any route).

Unknown paths (404) and wrong methods (405) are not operations, so they are listed in the
document's description. tests/serve/test_openapi.py provokes every documented code.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"},
                       "type": {"type": "string",
                                "examples": ["invalid_request_error", "rate_limit_error",
                                             "server_error"]},
                       "param": {"type": ["string", "null"]},
                       "code": {"type": ["string", "null"]}}}},
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}

REASONS = {
    400: "The request is invalid (a field's type or range, unknown fields, bad JSON, or a "
         "limit of this server); `param` names the field",
    401: "Missing or wrong API key (`Authorization: Bearer KEY`, --api-key)",
    404: "No such model (`code`: model_not_found)",
    408: "The request body did not arrive within --body-timeout-s",
    413: "The request body is larger than --max-body-bytes",
    421: "The Host header is not a loopback name (a loopback bind answers only those)",
    429: "The engine's batch and queue are full; retry after `Retry-After` seconds",
    499: "The client disconnected before the reply was ready: the rows were cancelled and "
         "nobody reads this (no body; counted by /metrics)",
    500: "Generation failed in the runtime (onnxruntime); the server keeps serving",
    503: "Shutting down (its drain period is over), the engine is closed, or more connections "
         "than --max-connections are open",
}

# What each route answers by itself, beside 200 (the front door's codes are added by rule).
ROUTE_CODES: dict[tuple[str, str], frozenset[int]] = {
    ("/v1/completions", "post"): frozenset({404, 429, 499, 500, 503}),
    ("/v1/chat/completions", "post"): frozenset({404, 429, 499, 500, 503}),
    ("/v1/models/{name}", "get"): frozenset({404}),
    ("/health", "get"): frozenset({503}),
    ("/tokenize", "post"): frozenset({404}),
    ("/detokenize", "post"): frozenset({404}),
}
# 200 bodies FastAPI cannot see (routes returning a Response of their own).
OK_CONTENT: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/completions", "post"): {
        "application/json": {"schema": {"type": "object",
                                        "description": "a text_completion object"}},
        "text/event-stream": {"schema": {
            "type": "string", "description": "with stream: data: {chunk} events, then "
                                             "data: [DONE]"}}},
    ("/v1/chat/completions", "post"): {
        "application/json": {"schema": {"type": "object",
                                        "description": "a chat.completion object"}},
        "text/event-stream": {"schema": {
            "type": "string", "description": "with stream: data: {chat.completion.chunk} "
                                             "events, then data: [DONE]"}}},
    ("/metrics", "get"): {"text/plain": {"schema": {
        "type": "string", "description": "Prometheus text exposition format"}}},
}


@dataclass(frozen=True)
class FrontDoor:
    """Which refusals the guard makes (the server's settings)."""

    api_key: bool
    host_check: bool


def codes_of(path: str, method: str, reads_body: bool, door: FrontDoor) -> set[int]:
    """Every status but 200 that this operation can answer."""
    codes = set(ROUTE_CODES.get((path, method), ())) | {413, 503}
    if reads_body:
        codes |= {400, 408}
    if door.api_key and path.startswith("/v1"):
        codes.add(401)
    if door.host_check:
        codes.add(421)
    return codes


def error_response(code: int) -> dict[str, Any]:
    if code == 499:
        return {"description": REASONS[code]}
    return {"description": REASONS[code], "content": {"application/json": {"schema": ERROR_REF}}}


def openapi_document(app: FastAPI, door: FrontDoor) -> dict[str, Any]:
    """FastAPI's document with each operation's true responses (cached on the app)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, routes=app.routes,
                           description="OpenAI-compatible completions over a bard model. "
                                       "Paths not listed answer 404, listed paths with another "
                                       "method 405, both with the ErrorBody shape.")
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["ErrorBody"] = ERROR_SCHEMA
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            ok = operation["responses"].get("200", {"description": "OK"})
            media = OK_CONTENT.get((path, method)) or guessed_content(path)
            if media is not None:
                ok = {**ok, "content": media}
            responses = {"200": ok}
            for code in sorted(codes_of(path, method, "requestBody" in operation, door)):
                responses[str(code)] = error_response(code)
            operation["responses"] = responses
    app.openapi_schema = document
    return document


def guessed_content(path: str) -> dict[str, Any] | None:
    """A static file's media type from its name (the writing room's assets)."""
    media, _ = mimetypes.guess_type(path)
    if media is None or path.endswith(".json"):
        return None
    return {media: {"schema": {"type": "string"}}}


def install(app: FastAPI, door: FrontDoor) -> None:
    """Serve the true document at /openapi.json."""
    app.openapi = lambda: openapi_document(app, door)  # type: ignore[method-assign]
