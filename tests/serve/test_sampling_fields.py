"""The sampling fields clients send (OpenAI's penalties and logit_bias, vLLM's
repetition_penalty, min_p, ignore_eos) over HTTP: the same text as the SDK, strict errors."""

from __future__ import annotations

import bard_sdk
import httpx
import pytest

from tests.serve.conftest import Server

openai = pytest.importorskip("openai")


def test_openai_fields_equal_the_sdk(client: openai.OpenAI, model: bard_sdk.Model,
                                     server: Server) -> None:
    e, z = model.vocab.index["e"], model.vocab.index["z"]
    reply = client.completions.create(
        model=server.model, prompt=["ROMEO:", "the the "], n=2, max_tokens=50, seed=11,
        temperature=0.9, frequency_penalty=1.2, presence_penalty=-0.5,
        logit_bias={str(e): -100, str(z): 3})
    texts = [c.text for c in sorted(reply.choices, key=lambda c: c.index)]
    expected = [model.generate(p, 50, seed=11 + k, temperature=0.9, frequency_penalty=1.2,
                               presence_penalty=-0.5, logit_bias={e: -100, z: 3})
                for k, p in enumerate(["ROMEO:", "ROMEO:", "the the ", "the the "])]
    assert texts == expected
    assert all("e" not in t for t in texts)


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_fields_equal_the_sdk(client: openai.OpenAI, model: bard_sdk.Model,
                                   server: Server, stream: bool) -> None:
    extra = {"repetition_penalty": 1.4, "min_p": 0.05, "ignore_eos": True, "top_k": 30}
    reply = client.completions.create(model=server.model, prompt="KING", max_tokens=70,
                                      seed=4, stop=["\n\n"], stream=stream, extra_body=extra)
    text = ("".join(c.choices[0].text for c in reply) if stream else reply.choices[0].text)
    full = model.generate("KING", 70, seed=4, stop="\n\n", repetition_penalty=1.4, min_p=0.05,
                          top_k=30)
    assert text == full.removesuffix("\n\n")
    assert text != model.generate("KING", 70, seed=4, stop="\n\n", top_k=30).removesuffix("\n\n")


def test_ignore_eos_changes_nothing(server: Server) -> None:
    """bard has no end-of-sequence token: generation runs to max_tokens or a stop string."""
    body = {"model": server.model, "prompt": "ROMEO:", "max_tokens": 40, "seed": 2}
    plain = httpx.post(server.url + "/v1/completions", json=body).json()
    ignored = httpx.post(server.url + "/v1/completions", json={**body, "ignore_eos": True}).json()
    assert plain["choices"][0]["text"] == ignored["choices"][0]["text"]
    assert ignored["usage"]["completion_tokens"] == 40


@pytest.mark.parametrize(
    ("change", "param", "named"),
    [({"frequency_penalty": 2.5}, "frequency_penalty", None),
     ({"presence_penalty": -3}, "presence_penalty", None),
     ({"presence_penalty": "0.5"}, "presence_penalty", None),
     ({"repetition_penalty": 0}, "repetition_penalty", None),
     ({"repetition_penalty": True}, "repetition_penalty", None),
     ({"min_p": 1.5}, "min_p", None),
     ({"ignore_eos": 1}, "ignore_eos", None),
     ({"logit_bias": {"1": 101}}, "logit_bias", None),
     ({"logit_bias": {"1": "big"}}, "logit_bias", None),
     ({"logit_bias": [1]}, "logit_bias", None),
     ({"logit_bias": {"3": 1, "9999": 5, "x": 1, "-1": 2}}, "logit_bias", "'9999', 'x', '-1'"),
     ({"min_tokens": 3}, "min_tokens", None)],
)
def test_bad_fields_are_refused_by_name(server: Server, change: dict[str, object], param: str,
                                        named: str | None) -> None:
    body = {"model": server.model, "prompt": "ROMEO:", "max_tokens": 5, **change}
    reply = httpx.post(server.url + "/v1/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    if named is not None:
        assert named in error["message"]
