"""Chat completions over the engine: the messages become a prompt through the model's chat
template (`bard_sdk.Model.chat_prompt`), and from there a chat request is a completion
request of that prompt, with the template's turn boundary added to its stop strings. So the
submission, the limits, the disconnect handling and the sampling fields are completions.py's;
only the bodies are chat's. The route (app.py) only calls `chat_complete`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bard_sdk import ArtifactError, BardError, ChatPrompt, Engine, Request
from bard_sdk.chat_template import UnknownChatCharacterError
from bard_sdk.engine import Completion
from fastapi.responses import JSONResponse, Response

from .chat_api import (
    ChatCompletionRequest,
    chat_body,
    chat_choice,
    chat_completion_id,
    delta_choice,
)
from .completions import (
    Disconnected,
    Limits,
    cancel_all,
    check_model,
    checked_max_tokens,
    event_stream,
    finished,
    json_dumps,
    merged_pieces,
    submit_all,
    usage_of,
)
from .openai_api import ApiError, CompletionRequest, SamplingRequest, error_body, now


async def chat_complete(engine: Engine, body: ChatCompletionRequest, model_id: str,
                        limits: Limits, disconnected: Disconnected) -> Response:
    """POST /v1/chat/completions: the whole response, or its event stream."""
    check_model(body.model, model_id)
    completion = as_completion(body, templated(engine, body))
    requests = submit_all(engine, completion, checked_max_tokens(completion, model_id, limits))
    ident, stamp = chat_completion_id(), now()
    if body.stream:
        return event_stream(chat_events(requests, completion, ident, stamp, model_id,
                                        engine.model.vocab.chars))
    results = await finished(requests, disconnected)
    if results is None:
        return Response(status_code=499)  # nobody is there to read it
    choices = [chat_choice(i, r.text, r.finish_reason) for i, r in enumerate(results)]
    return JSONResponse(chat_body(ident, model_id, stamp, choices,
                                  usage_of(completion.prompts, results)))


def templated(engine: Engine, body: ChatCompletionRequest) -> ChatPrompt:
    """The conversation through the model's chat template; a message the vocabulary cannot
    read is a 400 naming the message, the field, the characters and their positions."""
    try:
        return engine.model.chat_prompt([message.as_sdk() for message in body.messages])
    except UnknownChatCharacterError as err:
        raise ApiError(400, f"messages.{err.message_index}.{err.field}: {err.found}; remove "
                            "or replace them", param="messages",
                       code="unknown_character") from None
    except ArtifactError as err:  # the artifact's template writes characters it cannot read
        raise ApiError(400, str(err), param="messages", code="chat_unsupported") from None
    except BardError as err:
        raise ApiError(400, str(err), param="messages") from None


def as_completion(body: ChatCompletionRequest, prompt: ChatPrompt) -> CompletionRequest:
    """The completion request a chat request amounts to: the same sampling fields, the
    templated prompt, the turn boundary after the caller's own stop strings."""
    shared = {name: getattr(body, name) for name in SamplingRequest.model_fields}
    shared["stop"] = [*body.stops, *prompt.stop]
    return CompletionRequest.model_construct(**shared, prompt=prompt.text,
                                             max_tokens=body.reply_limit)


async def chat_events(requests: list[Request], completion: CompletionRequest, ident: str,
                      created: int, model_id: str, chars: list[str]) -> AsyncIterator[str]:
    """`chat.completion.chunk` events: the assistant role per choice first, then content
    deltas as the engine hands them over, an empty delta with the finish_reason per choice,
    optional usage, then `data: [DONE]`. A client that disconnects cancels every row."""
    def event(choices: list[dict[str, object]], usage: dict[str, int] | None = None) -> str:
        return "data: " + json_dumps(chat_body(ident, model_id, created, choices, usage,
                                               chunk=True)) + "\n\n"

    results: list[Completion] = []
    try:
        for index in range(len(requests)):
            yield event([delta_choice(index, {"role": "assistant", "content": ""}, None)])
        async for index, text, _, done, error in merged_pieces(requests, completion, chars):
            if error is not None:
                yield "data: " + json_dumps(error_body(str(error), "server_error")) + "\n\n"
                return
            if done is not None:
                results.append(done)
                yield event([delta_choice(index, {}, done.finish_reason)])
            elif text:
                yield event([delta_choice(index, {"content": text}, None)])
        options = completion.stream_options
        if options is not None and options.include_usage:
            yield event([], usage_of(completion.prompts, results))
        yield "data: [DONE]\n\n"
    finally:
        cancel_all(requests)
