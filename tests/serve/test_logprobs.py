"""`logprobs`, `echo` and token-id prompts on /v1/completions through the official `openai`
client, and the tokenizer routes: the values equal `Model.score` and the SDK's own
log-softmax of the raw logits."""

from __future__ import annotations

from typing import Any

import bard_sdk
import httpx
import numpy as np
import pytest

from tests.sdk.test_logprobs import reference_generation
from tests.serve.conftest import Server

openai = pytest.importorskip("openai")

PROMPT = "ROMEO:\nWhat light through yonder window breaks?\nJULIET:\n"


def prompt_reference(model: bard_sdk.Model, prompt: str) -> list[float]:
    """Each prompt character's log-probability from `Model.score` of its prefixes."""
    totals = [model.score(prompt[:i]).total_nats for i in range(1, len(prompt) + 1)]
    return [totals[i - 1] - totals[i] for i in range(1, len(prompt))]


def check_generated(logprobs: Any, text: str, dists: list[np.ndarray],
                    model: bard_sdk.Model, top: int) -> None:
    chars = model.vocab.chars
    assert logprobs.tokens == list(text)
    for token, lp, alternatives, dist in zip(logprobs.tokens, logprobs.token_logprobs,
                                             logprobs.top_logprobs, dists):
        assert lp == pytest.approx(dist[model.vocab.index[token]], abs=1e-5)
        best = [chars[i] for i in np.argsort(-dist, kind="stable")[:top]]
        assert list(alternatives)[:top] == best  # best first, then the chosen if not among them
        assert set(alternatives) == {*best, token}
        for char, value in alternatives.items():
            assert value == pytest.approx(dist[model.vocab.index[char]], abs=1e-5)


def test_echo_with_logprobs_scores_prompt_and_text(client: openai.OpenAI,
                                                   model: bard_sdk.Model,
                                                   server: Server) -> None:
    reply = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=40,
                                      temperature=0.7, seed=3, echo=True, logprobs=5)
    generated, dists = reference_generation(model, PROMPT, 40, temperature=0.7, seed=3)
    choice = reply.choices[0]
    assert choice.text == PROMPT + generated
    lp = choice.logprobs
    assert lp.tokens == list(PROMPT + generated)
    assert lp.text_offset == list(range(len(PROMPT) + len(generated)))
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1 : len(PROMPT)] == pytest.approx(prompt_reference(model, PROMPT),
                                                               abs=1e-5)
    assert sum(lp.token_logprobs[1 : len(PROMPT)]) == pytest.approx(
        -model.score(PROMPT).total_nats, abs=1e-4)
    tail = openai.types.CompletionChoice.model_validate(
        {"index": 0, "text": "", "finish_reason": "length", "logprobs": {
            "tokens": lp.tokens[len(PROMPT):], "token_logprobs": lp.token_logprobs[len(PROMPT):],
            "top_logprobs": lp.top_logprobs[len(PROMPT):]}}).logprobs
    check_generated(tail, generated, dists, model, 5)


def test_generated_logprobs_without_echo_start_at_the_text(client: openai.OpenAI,
                                                           model: bard_sdk.Model,
                                                           server: Server) -> None:
    reply = client.completions.create(model=server.model, prompt="KING:", max_tokens=30,
                                      seed=7, logprobs=0, n=2)
    for k, choice in enumerate(reply.choices):
        generated, dists = reference_generation(model, "KING:", 30, seed=7 + k)
        assert choice.text == generated
        assert choice.logprobs.text_offset == list(range(30))
        check_generated(choice.logprobs, generated, dists, model, 0)


def test_max_tokens_zero_scores_token_id_prompts(model: bard_sdk.Model, server: Server) -> None:
    """What lm-evaluation-harness sends for loglikelihood, with max_tokens 0: no generation."""
    texts = ["\nTo be, or not to be", "\nWhat's in a name"]
    ids = [model.encode(t).tolist() for t in texts]
    reply = httpx.post(server.url + "/v1/completions", json={
        "model": server.model, "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1,
        "temperature": 0}).json()
    for choice, text in zip(sorted(reply["choices"], key=lambda c: c["index"]), texts):
        assert choice["text"] == text and choice["finish_reason"] == "length"
        got = choice["logprobs"]["token_logprobs"]
        assert got[0] is None and len(got) == len(text)
        assert sum(got[1:]) == pytest.approx(-model.score(text).total_nats, abs=1e-4)
    assert reply["usage"]["completion_tokens"] == 0
    assert reply["usage"]["prompt_tokens"] == sum(map(len, texts))


def test_one_token_id_list_is_one_prompt(client: openai.OpenAI, model: bard_sdk.Model,
                                         server: Server) -> None:
    ids = model.encode("ROMEO:").tolist()
    reply = client.completions.create(model=server.model, prompt=ids, max_tokens=20, seed=1)
    assert reply.choices[0].text == model.generate("ROMEO:", 20, seed=1)
    assert reply.usage.prompt_tokens == len(ids)


def test_stream_chunks_carry_their_characters_logprobs(client: openai.OpenAI,
                                                       model: bard_sdk.Model,
                                                       server: Server) -> None:
    args = dict(model=server.model, prompt="Hark", max_tokens=150, seed=8, echo=True,
                logprobs=2)
    whole = client.completions.create(**args).choices[0]
    chunks = [c.choices[0] for c in client.completions.create(**args, stream=True)
              if c.choices]
    assert "".join(c.text for c in chunks) == whole.text
    assert len(chunks) > 2
    tokens, values, offsets = [], [], []
    for chunk in chunks:
        if chunk.text:
            assert chunk.logprobs.tokens == list(chunk.text)
            tokens += chunk.logprobs.tokens
            values += chunk.logprobs.token_logprobs
            offsets += chunk.logprobs.text_offset
    assert chunks[0].text == "Hark" and chunks[0].logprobs.token_logprobs[0] is None
    assert tokens == whole.logprobs.tokens and offsets == whole.logprobs.text_offset
    assert values[0] is None and values[1:] == pytest.approx(whole.logprobs.token_logprobs[1:],
                                                             abs=1e-9)


def test_empty_prompt_is_primed_and_echoes_nothing(client: openai.OpenAI,
                                                   model: bard_sdk.Model,
                                                   server: Server) -> None:
    reply = client.completions.create(model=server.model, prompt="", max_tokens=25, seed=2,
                                      echo=True, logprobs=1)
    generated, dists = reference_generation(model, "", 25, seed=2)
    assert reply.choices[0].text == generated
    check_generated(reply.choices[0].logprobs, generated, dists, model, 1)


@pytest.mark.parametrize(("change", "param", "words"), [
    ({"logprobs": 21}, "logprobs", "less than or equal to 20"),
    ({"logprobs": -1}, "logprobs", "greater than or equal to 0"),
    ({"logprobs": True}, "logprobs", "integer"),
    ({"prompt": [3, 999, -2]}, "prompt", "2 token id(s) not in the vocabulary"),
    ({"prompt": [[1, 2], [5000]]}, "prompt", "5000 at 0"),
    ({"prompt": []}, "prompt", "empty"),
    ({"prompt": [1, "a"]}, "prompt", ""),
    ({"logprobs": 20, "echo": True, "prompt": "a" * 40_000}, "logprobs", "entries"),
])
def test_bad_logprob_requests_are_400s(server: Server, change: dict[str, object], param: str,
                                       words: str) -> None:
    body = {"model": server.model, "prompt": "ROMEO:", "max_tokens": 4, **change}
    reply = httpx.post(server.url + "/v1/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_tokenizer_routes_in_vllms_shape(model: bard_sdk.Model, server: Server) -> None:
    text = "O Romeo, Romeo!\n"
    got = httpx.post(server.url + "/tokenize", json={"prompt": text, "add_special_tokens": False,
                                                     "return_token_strs": True}).json()
    assert got["tokens"] == model.encode(text).tolist() and got["count"] == len(text)
    assert got["token_strs"] == list(text) and got["max_model_len"] > 0
    back = httpx.post(server.url + "/detokenize", json={"tokens": got["tokens"]}).json()
    assert back == {"prompt": text}
    # an empty text with special tokens: what the model reads for it, the prime character
    empty = httpx.post(server.url + "/tokenize", json={"prompt": ""}).json()
    assert empty["tokens"] == [model.vocab.index["\n"]] and empty["token_strs"] is None
    info = httpx.get(server.url + "/tokenizer_info").json()
    assert info["bos_token"] == info["eos_token"] == "\n"
    assert info["vocab_size"] == len(model.vocab)


@pytest.mark.parametrize(("route", "body", "param", "words"), [
    ("/tokenize", {"prompt": "caf\u00e9 \u2603"}, "prompt", "'\u2603'"),
    ("/detokenize", {"tokens": [0, 77777]}, "tokens", "77777 at 1"),
    ("/tokenize", {"prompt": "x", "model": "other"}, "model", "not found"),
    ("/tokenize", {"prompt": 5}, "prompt", "string"),
    ("/detokenize", {"tokens": "abc"}, "tokens", "list"),
])
def test_tokenizer_routes_refuse_bad_input(server: Server, route: str, body: dict[str, Any],
                                           param: str, words: str) -> None:
    reply = httpx.post(server.url + route, json=body)
    assert reply.status_code in (400, 404), reply.text
    error = reply.json()["error"]
    assert error["param"] == param and words in error["message"], error
