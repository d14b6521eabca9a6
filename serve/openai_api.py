"""The OpenAI completions wire format: request schema, response bodies, error bodies.

Parsing is strict (unknown fields, strings for numbers and booleans for integers are refused),
and OpenAI fields that bard does not implement are accepted only at their neutral values, so a
client never silently gets something other than what it asked for. The sampling fields live in
one base (`SamplingRequest`) that every generating route's request shares.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from bard_sdk.logprobs import MAX_LOGPROBS
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

MAX_N = 64
MAX_STOPS = 4
MAX_PROMPTS = 64


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


Bias = Annotated[float, Field(ge=-100, le=100)]


class SamplingRequest(BaseModel):
    """How a request samples and ends, shared by every generating route (completions, chat):
    OpenAI's fields and vLLM's extensions, with their ranges. `logit_bias` keys are character
    ids as strings (a character is a token); they are checked against the vocabulary when the
    request is submitted (`sampling_arguments`). bard has no end-of-sequence token, so
    `ignore_eos` changes nothing: generation always runs to max_tokens or a stop string.
    A field added here applies to both routes (chat hands them to `submit_all` through the
    CompletionRequest it amounts to: serve/chat.py `as_completion`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    temperature: float | None = Field(1.0, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, description="vLLM's extension")
    min_p: float | None = Field(None, ge=0, le=1, description="vLLM's extension")
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=100,
                                             description="vLLM's extension; 1 is off")
    logit_bias: dict[str, Bias] | None = Field(
        None, description="character id (as a string) -> bias in [-100, 100]")
    ignore_eos: bool = Field(False, description="vLLM's extension; bard has no EOS token, "
                                                "so this changes nothing")
    stop: str | list[str] | None = None
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling_arguments(self, vocab_size: int) -> dict[str, Any]:
        """The keyword arguments of `Engine.submit` these fields mean (the seed aside: it
        differs per choice); a logit_bias key that is not a character id is a 400 naming it."""
        return {"temperature": 1.0 if self.temperature is None else self.temperature,
                "top_k": self.top_k, "top_p": self.top_p, "stop": self.stop,
                "min_p": self.min_p, "frequency_penalty": self.frequency_penalty,
                "presence_penalty": self.presence_penalty,
                "repetition_penalty": self.repetition_penalty,
                "logit_bias": logit_bias_ids(self.logit_bias, vocab_size)}


def logit_bias_ids(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float] | None:
    """OpenAI's {"id": bias} as {id: bias}; every key that is not a decimal id below
    `vocab_size` is named in one 400."""
    if not bias:
        return None
    bad = [key for key in bias
           if not (key.isascii() and key.isdigit() and int(key) < vocab_size)]
    if bad:
        shown = ", ".join(repr(key[:20]) for key in bad[:10])
        raise ApiError(400, f"logit_bias keys must be character ids 0..{vocab_size - 1} "
                            f"written as strings (a character is a token); not one: {shown}",
                       param="logit_bias")
    return {int(key): value for key, value in bias.items()}


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
