"""The OpenAI completions wire format: request schema, response bodies, error bodies.

Parsing is strict (unknown fields, strings for numbers and booleans for integers are refused),
and OpenAI fields that bard does not implement are accepted only at their neutral values, so a
client never silently gets something other than what it asked for.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from bard_sdk.logprobs import MAX_LOGPROBS
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

MAX_N = 64
MAX_STOPS = 4
MAX_PROMPTS = 64


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """The sampling fields /v1/completions and /v1/chat/completions share, defined once: a
    field added here applies to both routes (chat hands them to `submit_all` through the
    CompletionRequest it amounts to: serve/chat.py `as_completion`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    temperature: float | None = Field(1.0, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, description="bard extension, as in vLLM")
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Accepted at their neutral values only: bard does not implement them.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value not in (None, 0):
            raise ValueError("is not supported by bard (only 0)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("is not supported by bard")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(SamplingRequest):
    """POST /v1/completions. Lengths are counted in characters (a character is a token)."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="a string, a list of strings, or token ids (vocabulary indices: a "
                    "character is a token): a list of ints, or a list of such lists")
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description=(
        f"each character's log-probability and the 0 to {MAX_LOGPROBS} likeliest "
        "alternatives (OpenAI allows 5, vLLM 20); of the raw model distribution"))
    # Accepted at their neutral values only: bard does not implement them.
    best_of: Literal[1] | None = None
    suffix: None = None

    # Token-id prompts as text, once checked against the vocabulary (tokenizer_api.py)
    _texts: list[str] | None = PrivateAttr(None)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[Any]) -> str | list[Any]:
        if isinstance(value, list) and not value:
            raise ValueError("must not be an empty list")
        if isinstance(value, list) and not isinstance(value[0], int) and \
                not 1 <= len(value) <= MAX_PROMPTS:
            raise ValueError(f"must hold 1 to {MAX_PROMPTS} prompts")
        return value

    @property
    def token_prompts(self) -> list[list[int]] | None:
        """The prompts as token ids, when they came as ids."""
        value = self.prompt
        if isinstance(value, str) or isinstance(value[0], str):
            return None
        return [value] if isinstance(value[0], int) else value  # type: ignore[list-item]

    def read_tokens(self, texts: list[str]) -> None:
        """The text of token-id prompts (checked by the caller), for `prompts`."""
        self._texts = texts

    @property
    def prompts(self) -> list[str]:
        if self.token_prompts is not None:
            assert self._texts is not None, "token-id prompts are read with read_tokens"
            return self._texts
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)  # type: ignore[arg-type]


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def choice(index: int, text: str, finish_reason: str | None,
           logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def completion_body(ident: str, model: str, created: int, choices: list[dict[str, Any]],
                    usage: dict[str, int] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": ident, "object": "text_completion", "created": created,
                            "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def usage(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
            "total_tokens": prompt_chars + completion_chars}


def model_card(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "bard"}


def now() -> int:
    return int(time.time())


class ApiError(Exception):
    """An OpenAI-shaped error response: its status and body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, error_body(message, kind, param, code)
