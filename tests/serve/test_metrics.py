"""`GET /metrics` of a real `bard serve`: Prometheus text that counts what the server did."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import Server


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    reply = httpx.get(server.url + "/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counts_follow_the_requests(server: Server) -> None:
    before = scrape(server)
    url = server.url + "/v1/completions"
    good = [{"model": server.model, "prompt": p, "max_tokens": k, "seed": 1}
            for p, k in (("ROMEO:", 30), ("", 12), ("KING", 7))]
    for body in good:
        assert httpx.post(url, json=body).status_code == 200
    stream = {**good[0], "stream": True}
    assert "[DONE]" in httpx.post(url, json=stream).text
    assert httpx.post(url, json={**good[0], "temperature": -1}).status_code == 400
    assert httpx.post(url, json={**good[0], "model": "nope"}).status_code == 404
    assert httpx.get(server.url + "/no/such/route").status_code == 404
    assert httpx.get(server.url + "/v1/models/nope").status_code == 404
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("bard_requests_total", route="/v1/completions", status="200") == 4
    assert grew("bard_requests_total", route="/v1/completions", status="400") == 1
    assert grew("bard_requests_total", route="/v1/completions", status="404") == 1
    assert grew("bard_requests_total", route="unmatched", status="404") == 1
    assert grew("bard_requests_total", route="/v1/models/{name}", status="404") == 1
    assert grew("bard_prompt_characters_total") == 6 + 0 + 4 + 6
    assert grew("bard_generated_characters_total") == 30 + 12 + 7 + 30
    assert grew("bard_requests_completed_total") == 4
    assert grew("bard_time_to_first_character_seconds_count") == 4
    assert grew("bard_step_seconds_count") >= 30
    assert grew("bard_engine_steps_total") >= 30
    assert 0 < grew("bard_step_seconds_sum") < 60
    buckets = [(float(dict(labels)["le"]), v) for (name, labels), v in after.items()
               if name == "bard_step_seconds_bucket"]
    counts = [v for _, v in sorted(buckets)]
    assert counts == sorted(counts) and counts[-1] == after[("bard_step_seconds_count", ())]


def test_active_and_queued_rows_are_live(server: Server) -> None:
    """While a long stream generates, it is an active row; after it, none is."""
    body = {"model": server.model, "prompt": "ROMEO:", "max_tokens": 100_000, "stream": True}
    seen: list[float] = []
    with httpx.stream("POST", server.url + "/v1/completions", json=body) as reply:
        for _ in reply.iter_lines():
            seen.append(value(scrape(server), "bard_active_rows"))
            break
    assert seen == [1.0]
    deadline = time.monotonic() + 10
    while value(scrape(server), "bard_active_rows") and time.monotonic() < deadline:
        time.sleep(0.05)  # the client left: its row leaves within a step
    samples = scrape(server)
    assert value(samples, "bard_active_rows") == 0 == value(samples, "bard_queued_requests")
    assert value(samples, "bard_max_active_rows") == 32


def test_scrapes_beside_traffic_stay_consistent(server: Server) -> None:
    """Scraping while requests run: counters never go back."""
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            httpx.post(server.url + "/v1/completions",
                       json={"model": server.model, "prompt": "A", "max_tokens": 20})

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        last = 0.0
        for _ in range(10):
            now = value(scrape(server), "bard_generated_characters_total")
            assert now >= last
            last = now
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_metrics_route_is_get_only(server: Server, method: str) -> None:
    reply = httpx.request(method, server.url + "/metrics")
    assert reply.status_code == 405 and reply.json()["error"]["code"] == "method_not_allowed"
