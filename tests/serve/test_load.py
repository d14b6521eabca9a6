"""A bounded load test on loopback: 64 concurrent clients, mixed streaming, zero errors."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bard_sdk
import httpx

from tests.serve.conftest import Server

CLIENTS = 64
REQUESTS_PER_CLIENT = 3
PROMPTS = ["ROMEO:", "JULIET:", "KING HENRY", "", "First Citizen:\nWe are accounted poor."]


def one_request(url: str, model: str, prompt: str, length: int, seed: int,
                stream: bool) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": length, "seed": seed,
            "temperature": 0.9, "stream": stream}
    with httpx.Client(timeout=120) as client:
        if not stream:
            reply = client.post(url, json=body)
            reply.raise_for_status()
            return str(reply.json()["choices"][0]["text"])
        pieces = []
        with client.stream("POST", url, json=body) as reply:
            reply.raise_for_status()
            for line in reply.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    pieces.append(json.loads(line[6:])["choices"][0]["text"])
        return "".join(pieces)


def test_64_concurrent_clients_get_their_single_request_text(
        server: Server, tiny_artifact: Path) -> None:
    model = bard_sdk.load(tiny_artifact, device="cpu")
    rng = random.Random(7)
    jobs = [(rng.choice(PROMPTS), rng.randint(20, 120), 5000 + k, k % 2 == 0)
            for k in range(CLIENTS * REQUESTS_PER_CLIENT)]
    url = server.url + "/v1/completions"
    one_request(url, server.model, "ROMEO:", 50, 1, True)  # warm up before measuring memory
    rss_before = server.rss_bytes()

    def client(index: int) -> list[str]:
        mine = jobs[index::CLIENTS]
        return [one_request(url, server.model, *job) for job in mine]

    with ThreadPoolExecutor(CLIENTS) as pool:
        per_client = list(pool.map(client, range(CLIENTS)))
    texts = {k: per_client[k % CLIENTS][k // CLIENTS] for k in range(len(jobs))}
    expected = {k: model.generate(p, n, temperature=0.9, seed=s)
                for k, (p, n, s, _) in enumerate(jobs)}
    assert texts == expected, "every response equals its single-request result"
    health = httpx.get(server.url + "/health").json()
    assert health["active"] == 0 and health["queued"] == 0
    rss_after = server.rss_bytes()
    # back near its start: what the load left behind is small against the process itself
    assert rss_after - rss_before < 64 * 2**20, (rss_before, rss_after)
