"""POST /v1/chat/completions through the official `openai` client, LangChain and raw HTTP,
against a real `bard serve` of the shipped model (whose manifest predates chat templates, so
it gets the SDK's default play script): the reply is the SDK's generation for the templated
prompt with the same seed, cut at the template's turn boundary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bard_sdk
import httpx
import pytest

from tests.serve.conftest import Server, start_server, stop_server

openai = pytest.importorskip("openai")

SCENE = [{"role": "system", "content": "Verona. A public place."},
         {"role": "user", "content": "Good morrow, lady."},
         {"role": "assistant", "content": "Good morrow, sir."},
         {"role": "user", "content": "What says your father to the match?"}]


@pytest.fixture(scope="module")
def model() -> bard_sdk.Model:
    return bard_sdk.load(device="cpu")


@pytest.fixture(scope="module")
def shipped() -> Iterator[Server]:
    running = start_server(bard_sdk.bundled_model_path(), "--max-active", "16")
    try:
        yield running
    finally:
        stop_server(running.process)
        assert not any("Traceback" in line for line in running.log), running.log


@pytest.fixture(scope="module")
def client(shipped: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=shipped.url + "/v1", api_key="unused", max_retries=0)


def expected_reply(model: bard_sdk.Model, messages: list[dict[str, str]], limit: int,
                   **options: Any) -> tuple[str, str, int]:
    """(reply, finish_reason, characters generated) as the SDK makes them: the templated
    prompt continued until the turn boundary, which the reply leaves out."""
    prompt = model.chat_prompt(messages)
    full = model.generate(prompt.text, limit, stop=list(prompt.stop), **options)
    for stop in prompt.stop:
        if full.endswith(stop):
            return full[: -len(stop)], "stop", len(full)
    return full, "length", len(full)


def test_chat_is_the_sdk_reply_ending_at_the_turn_boundary(
        client: openai.OpenAI, model: bard_sdk.Model, shipped: Server) -> None:
    prompt = model.chat_prompt(SCENE)
    assert prompt.text.endswith("ROMEO:\nWhat says your father to the match?\n\nJULIET:\n")
    reasons = []
    for seed in range(4):
        reply = client.chat.completions.create(model=shipped.model, messages=SCENE,
                                               seed=seed, temperature=0.8, max_tokens=400)
        text, reason, generated = expected_reply(model, SCENE, 400, seed=seed,
                                                 temperature=0.8)
        choice = reply.choices[0]
        assert reply.object == "chat.completion" and choice.message.role == "assistant"
        assert (choice.message.content, choice.finish_reason) == (text, reason)
        assert "\n\n" not in choice.message.content
        assert reply.usage.prompt_tokens == len(prompt.text)
        assert reply.usage.completion_tokens == generated
        reasons.append(reason)
    assert "stop" in reasons, "no reply reached the turn boundary"
    assert model.chat(SCENE, 400, seed=0, temperature=0.8) == expected_reply(
        model, SCENE, 400, seed=0, temperature=0.8)[0]


def test_chat_stream_equals_the_sdk(client: openai.OpenAI, model: bard_sdk.Model,
                                    shipped: Server) -> None:
    chunks = list(client.chat.completions.create(
        model=shipped.model, messages=SCENE, seed=11, temperature=0.9, top_p=0.95, n=2,
        max_completion_tokens=300, stream=True, stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    roles = [c.choices[0].delta.role for c in chunks[:2]]
    assert roles == ["assistant", "assistant"]
    generated = 0
    for index in range(2):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        text = "".join(choice.delta.content or "" for choice in mine)
        expected, reason, count = expected_reply(model, SCENE, 300, seed=11 + index,
                                                 temperature=0.9, top_p=0.95)
        assert text == expected
        assert [c.finish_reason for c in mine][-1] == reason
        assert {c.finish_reason for c in mine[:-1]} == {None}
        generated += count
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == generated
    assert chunks[-1].usage.prompt_tokens == len(model.chat_prompt(SCENE).text)


def test_names_pick_the_speakers(client: openai.OpenAI, model: bard_sdk.Model,
                                 shipped: Server) -> None:
    messages = [{"role": "system", "name": "CHORUS", "content": "Two households."},
                {"role": "user", "name": "HAMLET", "content": "Speak, I am bound to hear."},
                {"role": "assistant", "name": "GHOST", "content": "So art thou to revenge."},
                {"role": "user", "name": "HAMLET", "content": "What?"}]
    prompt = model.chat_prompt(messages)
    assert prompt.text.startswith("CHORUS:\n") and prompt.text.endswith("What?\n\nGHOST:\n")
    reply = client.chat.completions.create(model=shipped.model, messages=messages, seed=2,
                                           max_tokens=200)
    assert reply.usage.prompt_tokens == len(prompt.text)
    assert reply.choices[0].message.content == expected_reply(model, messages, 200, seed=2)[0]


def test_stop_strings_and_limits(client: openai.OpenAI, model: bard_sdk.Model,
                                 shipped: Server) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(model=shipped.model, messages=SCENE, seed=seed,
                                               stop=["e", "\n"], max_tokens=100)
        assert reply.choices[0].message.content == model.chat(SCENE, 100, seed=seed,
                                                              stop=["e", "\n"])
        assert "e" not in reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model=shipped.model, messages=SCENE, seed=0,
                                           max_completion_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_events_are_strict_json_ending_in_done(shipped: Server) -> None:
    body = {"model": shipped.model, "messages": SCENE, "max_tokens": 40, "stream": True,
            "seed": 1}
    with httpx.stream("POST", shipped.url + "/v1/chat/completions", json=body) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e, parse_constant=lambda c: pytest.fail(c)) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize(("change", "status", "param", "says"), [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "a{b}"}]},
     400, "messages", "messages.1.content: 2 character(s) not in the model's vocabulary: "
                      "'{' at 1, '}' at 3"),
    ({"messages": [{"role": "user", "name": "R~", "content": "hi"}]}, 400, "messages",
     "messages.0.name"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages", "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages", "'image_url'"),
    ({"messages": [{"role": "user", "content": "x", "name": "A\nB"}]}, 400, "messages",
     "one line"),
    ({"messages": []}, 400, "messages", "at least 1"),
    ({"tools": [{"type": "function"}]}, 400, "tools", "Extra inputs"),
    ({"logprobs": True}, 400, "logprobs", "logprobs"),
    ({"top_logprobs": 2}, 400, "top_logprobs", "top_logprobs"),
    ({"response_format": {"type": "json_object"}}, 400, "response_format", "text"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, 400, "max_completion_tokens",
     "disagrees"),
    ({"max_tokens": 10**9}, 400, "max_tokens", "at most"),
    ({"n": 0}, 400, "n", "n"),
    ({"temperature": "hot"}, 400, "temperature", "temperature"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    ({"stop": "{"}, 400, "stop", "stop"),
    ({"model": "gpt-4o"}, 404, "model", "not found"),
])
def test_bad_chat_requests_get_openai_errors_naming_the_field(
        shipped: Server, change: dict[str, Any], status: int, param: str, says: str) -> None:
    body = {"model": shipped.model, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5, **change}
    reply = httpx.post(shipped.url + "/v1/chat/completions", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_text_parts_are_joined(client: openai.OpenAI, model: bard_sdk.Model,
                               shipped: Server) -> None:
    parts = [{"type": "text", "text": "Good morrow."}, {"type": "text", "text": "How now?"}]
    reply = client.chat.completions.create(
        model=shipped.model, messages=[{"role": "user", "content": parts}], seed=4,
        max_tokens=100)
    joined = [{"role": "user", "content": "Good morrow.\nHow now?"}]
    assert reply.usage.prompt_tokens == len(model.chat_prompt(joined).text)
    assert reply.choices[0].message.content == model.chat(joined, 100, seed=4)


def test_the_served_template_is_the_manifests(artifact_copy: Path) -> None:
    """An artifact's own template drives the route: another speaker line, a one-line turn."""
    manifest_path = artifact_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["chat_template"] = {"turn": "{speaker}: {text}\n", "system": "{text}\n",
                                 "reply": "{speaker}:", "stop": ["\n"],
                                 "speakers": {"user": "BOY", "assistant": "MAN"}}
    manifest_path.write_text(json.dumps(manifest))
    model = bard_sdk.load(artifact_copy, device="cpu")
    messages = [{"role": "user", "content": "Whither?"}]
    served = start_server(artifact_copy)
    try:
        for seed in range(3):
            reply = httpx.post(served.url + "/v1/chat/completions", json={
                "model": served.model, "messages": messages, "seed": seed,
                "max_tokens": 200}).json()
            assert reply["usage"]["prompt_tokens"] == len("BOY: Whither?\nMAN:")
            text = reply["choices"][0]["message"]["content"]
            assert text == model.chat(messages, 200, seed=seed) and "\n" not in text
    finally:
        stop_server(served.process)


def test_langchain_chat_openai(shipped: Server, model: bard_sdk.Model) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    chat = langchain_openai.ChatOpenAI(base_url=shipped.url + "/v1", api_key="unused",
                                       model=shipped.model, temperature=0.8, seed=3,
                                       max_tokens=300, max_retries=0)
    history = [SystemMessage("Verona. A public place."),
               HumanMessage("Good morrow, lady.", name="PARIS"),
               AIMessage("Good morrow, sir."), HumanMessage("What news?", name="PARIS")]
    messages = [{"role": "system", "content": "Verona. A public place."},
                {"role": "user", "name": "PARIS", "content": "Good morrow, lady."},
                {"role": "assistant", "content": "Good morrow, sir."},
                {"role": "user", "name": "PARIS", "content": "What news?"}]
    expected, reason, _ = expected_reply(model, messages, 300, seed=3, temperature=0.8)
    answer = chat.invoke(history)
    assert answer.content == expected
    assert answer.response_metadata["finish_reason"] == reason
    assert answer.usage_metadata["input_tokens"] == len(model.chat_prompt(messages).text)
    streamed = "".join(str(piece.content) for piece in chat.stream(history))
    assert streamed == expected


def test_langchain_openai_completions(shipped: Server, model: bard_sdk.Model) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.OpenAI(base_url=shipped.url + "/v1", api_key="unused",
                                  model=shipped.model, temperature=0.7, seed=8,
                                  max_tokens=120, max_retries=0)
    assert llm.invoke("ROMEO:") == model.generate("ROMEO:", 120, temperature=0.7, seed=8)
    streamed = "".join(llm.stream("JULIET:"))
    assert streamed == model.generate("JULIET:", 120, temperature=0.7, seed=8)
