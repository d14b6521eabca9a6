"""`bard serve` through the official `openai` client and raw HTTP: same text as the SDK."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import bard_sdk
import httpx
import pytest

from tests.serve.conftest import Server, start_server, stop_server

openai = pytest.importorskip("openai")


def without_stop(text: str, stops: list[str]) -> str:
    """OpenAI leaves a matched stop sequence out of the text; bard_sdk keeps it."""
    ended = [s for s in stops if text.endswith(s)]
    return text[: len(text) - max(map(len, ended))] if ended else text


def test_models_and_health(client: openai.OpenAI, server: Server) -> None:
    assert [m.id for m in client.models.list().data] == [server.model]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["max_active"] == 32


def test_completion_equals_the_sdk(client: openai.OpenAI, model: bard_sdk.Model,
                                   server: Server) -> None:
    reply = client.completions.create(model=server.model, prompt="ROMEO:", max_tokens=60,
                                      temperature=0.8, seed=5)
    assert reply.choices[0].text == model.generate("ROMEO:", 60, temperature=0.8, seed=5)
    assert reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, 60)


def test_stream_equals_the_sdk(client: openai.OpenAI, model: bard_sdk.Model,
                               server: Server) -> None:
    chunks = list(client.completions.create(model=server.model, prompt="KING", max_tokens=80,
                                            temperature=1.0, top_p=0.9, seed=9, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == model.generate("KING", 80, temperature=1.0, top_p=0.9, seed=9)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "length" and set(finals[:-1]) == {None}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 80


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_follow_openai(client: openai.OpenAI, model: bard_sdk.Model,
                                    server: Server, stream: bool) -> None:
    stops = ["\n", "th"]
    for seed in range(4):
        reply = client.completions.create(model=server.model, prompt="ROMEO:", max_tokens=70,
                                          seed=seed, stop=stops, stream=stream)
        if stream:
            parts = list(reply)
            text = "".join(c.choices[0].text for c in parts)
            reason = parts[-1].choices[0].finish_reason
        else:
            text, reason = reply.choices[0].text, reply.choices[0].finish_reason
        full = model.generate("ROMEO:", 70, seed=seed, stop=stops)
        assert text == without_stop(full, stops)
        assert reason == ("stop" if text != full else "length")


def test_n_and_prompt_lists_seed_each_choice(client: openai.OpenAI, model: bard_sdk.Model,
                                             server: Server) -> None:
    prompts = ["ROMEO:", "JULIET:"]
    reply = client.completions.create(model=server.model, prompt=prompts, n=2, max_tokens=30,
                                      seed=100, temperature=0.9)
    texts = [c.text for c in sorted(reply.choices, key=lambda c: c.index)]
    expected = [model.generate(prompts[k // 2], 30, seed=100 + k, temperature=0.9)
                for k in range(4)]
    assert texts == expected


def test_echo_returns_prompt_and_text(server: Server, model: bard_sdk.Model) -> None:
    body = {"model": server.model, "prompt": "ROMEO:", "max_tokens": 10, "seed": 3,
            "echo": True}
    reply = httpx.post(server.url + "/v1/completions", json=body).json()
    assert reply["choices"][0]["text"] == "ROMEO:" + model.generate("ROMEO:", 10, seed=3)


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [({"temperature": "hot"}, 400, "temperature"),
     ({"temperature": -1}, 400, "temperature"),
     ({"top_k": 10_000}, 400, "top_k"),
     ({"top_p": 0}, 400, "top_p"),
     ({"n": 0}, 400, "n"),
     ({"max_tokens": True}, 400, "max_tokens"),
     ({"max_tokens": 10**9}, 400, "max_tokens"),
     ({"prompt": "R{x"}, 400, "prompt"),
     ({"prompt": []}, 400, "prompt"),
     ({"prompt": [1, 10**6]}, 400, "prompt"),
     ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
     ({"stop": ""}, 400, "stop"),
     ({"logprobs": 99}, 400, "logprobs"),
     ({"presence_penalty": 2.5}, 400, "presence_penalty"),
     ({"surprise": 1}, 400, "surprise"),
     ({"model": "gpt-4"}, 404, "model")],
)
def test_bad_requests_get_openai_error_bodies(server: Server, change: dict[str, object],
                                              status: int, param: str) -> None:
    body = {"model": server.model, "prompt": "ROMEO:", "max_tokens": 5, **change}
    reply = httpx.post(server.url + "/v1/completions", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"]
    assert error["type"] == "invalid_request_error"


def test_invalid_json_is_a_400(server: Server) -> None:
    reply = httpx.post(server.url + "/v1/completions", content=b"{not json",
                       headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "JSON" in reply.json()["error"]["message"]


def test_openai_client_raises_on_bad_request(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=server.model, prompt="x", temperature=-2)


def test_overloaded_engine_answers_429_not_a_hang(tiny_artifact: Path) -> None:
    small = start_server(tiny_artifact, "--max-active", "1", "--max-queued", "1")
    try:
        url = small.url + "/v1/completions"
        body = {"model": small.model, "prompt": "ROMEO:", "max_tokens": 10**5, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=60) as long_running:
            lines = long_running.iter_lines()  # kept: a dropped iterator closes the stream
            next(lines)  # the first row is generating
            waiting: dict[str, httpx.Response] = {}
            queued = threading.Thread(target=lambda: waiting.update(
                r=httpx.post(url, json={**body, "stream": False, "max_tokens": 5},
                             timeout=60)))
            queued.start()
            deadline = 200
            while httpx.get(small.url + "/health").json()["queued"] < 1 and deadline:
                deadline -= 1
                threading.Event().wait(0.05)
            refused = httpx.post(url, json={**body, "stream": False, "max_tokens": 5})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "engine_overloaded"
            assert refused.headers["retry-after"] == "1"
        # leaving the stream disconnects the client: its row is cancelled, the queued runs
        queued.join(timeout=60)
        assert waiting["r"].status_code == 200
        assert len(waiting["r"].json()["choices"][0]["text"]) == 5
        health = httpx.get(small.url + "/health").json()
        assert health["active"] == 0 and health["queued"] == 0
    finally:
        stop_server(small.process)


def test_streamed_events_are_strict_json(server: Server) -> None:
    body = {"model": server.model, "prompt": "ROMEO:", "max_tokens": 12, "stream": True,
            "seed": 1}
    with httpx.stream("POST", server.url + "/v1/completions", json=body) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        chunk = json.loads(event)
        assert chunk["object"] == "text_completion" and chunk["model"] == server.model
