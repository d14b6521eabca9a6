"""The OpenAI chat completions wire format: request schema and response bodies.

Strict as the completions schema (openai_api.py), whose sampling fields it shares
(`SamplingRequest`): unknown fields are refused, and the OpenAI fields bard does not implement
(tools, logprobs, JSON output) are accepted only at their neutral values.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .openai_api import SamplingRequest

MAX_MESSAGES = 1024
MAX_NAME_CHARS = 64
# max_tokens when a request sets neither it nor max_completion_tokens: the turn boundary
# ends most replies long before; this bounds one from a model that never writes it.
DEFAULT_CHAT_MAX_TOKENS = 1000


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message. `content` may be a list of text parts (joined with newlines, as vLLM
    does); `name` picks the speaker (else the role's speaker in the chat template)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME_CHARS)

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        """Text parts joined into one string here, so a refusal names the part that is not
        text (a plain union would first complain that the list is not a string)."""
        if not isinstance(value, list):
            return value
        texts = []
        for index, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text":
                raise ValueError(f"part {index} is of type {kind!r}; bard reads text only")
            if set(part) != {"type", "text"} or not isinstance(part["text"], str):
                raise ValueError(f'part {index} must be {{"type": "text", "text": a string}}')
            texts.append(part["text"])
        return "\n".join(texts)

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and ("\n" in value or "\r" in value):
            raise ValueError("must be one line (it names the speaker)")
        return value

    def as_sdk(self) -> dict[str, str]:
        """The message as `bard_sdk.Model.chat_prompt` takes it."""
        message = {"role": self.role, "content": self.content}
        return message if self.name is None else {**message, "name": self.name}


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]


class ChatCompletionRequest(SamplingRequest):
    """POST /v1/chat/completions. Lengths are counted in characters (a character is a
    token). The reply ends at the chat template's turn boundary (finish_reason "stop")."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    # Accepted at their neutral values only: bard does not implement them here.
    logprobs: Literal[False] | None = None
    top_logprobs: None = None
    response_format: ResponseFormat | None = None

    @field_validator("max_completion_tokens")
    @classmethod
    def _one_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        older = info.data.get("max_tokens")
        if None not in (value, older) and value != older:
            raise ValueError(f"disagrees with max_tokens ({older}); give one of the two")
        return value

    @property
    def reply_limit(self) -> int:
        """max_completion_tokens, or max_tokens (its older name), or the chat default."""
        for limit in (self.max_completion_tokens, self.max_tokens):
            if limit is not None:
                return limit
        return DEFAULT_CHAT_MAX_TOKENS


def chat_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text},
            "logprobs": None, "finish_reason": finish_reason}


def delta_choice(index: int, delta: dict[str, str], finish_reason: str | None
                 ) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def chat_body(ident: str, model: str, created: int, choices: list[dict[str, Any]],
              usage: dict[str, int] | None, *, chunk: bool = False) -> dict[str, Any]:
    """A `chat.completion`, or with `chunk` one `chat.completion.chunk` of a stream."""
    body: dict[str, Any] = {"id": ident,
                            "object": "chat.completion.chunk" if chunk else "chat.completion",
                            "created": created, "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body
