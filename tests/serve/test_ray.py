"""`bard serve --ray` on a real local Ray instance: 2 replicas, CPU only, through Ray's proxy.

The instance belongs to the `bard serve --ray` process this module starts, in a session of its
own: stopping that process shuts Serve and Ray down, and whatever is left in its session (found
by the session id, which is the pid we hold) is killed before the module ends.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bard_sdk
import httpx
import pytest

from tests.serve.conftest import Server, start_server, stop_server

pytest.importorskip("ray.serve", reason="bard serve --ray needs the ray extra: "
                                        "pip install 'bard[ray]'")
openai = pytest.importorskip("openai")

REPLICA_HEADER = "x-bard-replica"


def session_pids(session: int) -> list[int]:
    """Live processes whose session id is `session` (field 6 of /proc/PID/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def stop_ray_server(server: Server) -> list[int]:
    """SIGTERM the server, wait for its Ray processes to leave; kill any that stay and
    return their pids (a clean shutdown leaves none)."""
    stop_server(server.process)
    deadline = time.monotonic() + 20
    while session_pids(server.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = session_pids(server.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.fixture(scope="module")
def ray_server(tiny_artifact: Path) -> Iterator[Server]:
    running = start_server(tiny_artifact, "--ray", "--replicas", "2", "--num-cpus", "1",
                           "--max-active", "16", timeout=240, new_session=True)
    try:
        yield running
    finally:
        left = stop_ray_server(running)
        assert running.process.returncode in (0, -signal.SIGTERM), running.log
        assert not left, f"Ray processes outlived bard serve --ray: {left}"


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> bard_sdk.Model:
    return bard_sdk.load(tiny_artifact, device="cpu")


@pytest.fixture(scope="module")
def client(ray_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=ray_server.url + "/v1", api_key="unused", max_retries=0,
                         timeout=120)


def replica_pids(url: str, count: int = 2, tries: int = 60) -> dict[str, int]:
    """Replica id -> pid of the replicas that answer /health (the proxy picks one per call;
    an idle pair is picked at random), until `count` are seen or `tries` calls are made."""
    pids: dict[str, int] = {}
    for _ in range(tries):
        replica = httpx.get(url + "/health", timeout=10).json()["replica"]
        pids[replica["id"]] = replica["pid"]
        if len(pids) == count:
            break
    return pids


def test_proxy_gives_the_sdk_text(client: openai.OpenAI, model: bard_sdk.Model,
                                  ray_server: Server) -> None:
    assert [m.id for m in client.models.list().data] == [ray_server.model]
    reply = client.completions.create(model=ray_server.model, prompt="ROMEO:", max_tokens=60,
                                      temperature=0.8, seed=5)
    assert reply.choices[0].text == model.generate("ROMEO:", 60, temperature=0.8, seed=5)
    chunks = list(client.completions.create(model=ray_server.model, prompt="KING",
                                            max_tokens=80, top_p=0.9, seed=9, stream=True))
    assert len(chunks) > 2, "the text arrives in pieces"
    assert "".join(c.choices[0].text for c in chunks) == model.generate(
        "KING", 80, top_p=0.9, seed=9)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_two_replicas_share_the_load(client: openai.OpenAI, model: bard_sdk.Model,
                                     ray_server: Server) -> None:
    assert len(replica_pids(ray_server.url)) == 2
    seeds = list(range(100, 112))
    served: dict[int, tuple[str, str]] = {}

    def call(seed: int) -> None:
        raw = client.completions.with_raw_response.create(
            model=ray_server.model, prompt="JULIET:", max_tokens=400, seed=seed)
        served[seed] = (raw.headers[REPLICA_HEADER], raw.parse().choices[0].text)

    threads = [threading.Thread(target=call, args=(s,)) for s in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    expected = model.generate(["JULIET:"] * len(seeds), 400, seed=seeds)
    assert [served[s][1] for s in seeds] == expected
    assert len({replica for replica, _ in served.values()}) == 2, served


def test_killed_replica_fails_its_requests_and_ray_replaces_it(
        client: openai.OpenAI, model: bard_sdk.Model, ray_server: Server) -> None:
    pids = replica_pids(ray_server.url)
    assert len(pids) == 2, pids
    # Long enough that every request is still generating when the replica dies.
    length, seeds = 12_000, list(range(8))
    streaming = threading.Barrier(len(seeds) + 1, timeout=120)
    replica_of: dict[int, str] = {}
    outcome: dict[int, str | BaseException] = {}

    def call(seed: int) -> None:
        try:
            with client.completions.with_streaming_response.create(
                    model=ray_server.model, prompt="ROMEO:", max_tokens=length, seed=seed,
                    stream=True) as response:
                replica_of[seed] = response.headers[REPLICA_HEADER]
                chunks = iter(response.parse())
                text = next(chunks).choices[0].text
                streaming.wait()  # every stream has begun before the kill
                outcome[seed] = text + "".join(c.choices[0].text for c in chunks)
        except openai.APIError as err:
            outcome[seed] = err

    def call_whole(seed: int) -> None:  # without streaming: an error or the whole text
        try:
            outcome[-seed - 1] = client.completions.create(
                model=ray_server.model, prompt="ROMEO:", max_tokens=length, seed=seed
            ).choices[0].text
        except openai.APIError as err:
            outcome[-seed - 1] = err

    threads = [*(threading.Thread(target=call, args=(s,)) for s in seeds),
               *(threading.Thread(target=call_whole, args=(s,)) for s in seeds[:4])]
    for thread in threads:
        thread.start()
    streaming.wait()
    victim = replica_of[seeds[0]]
    os.kill(pids[victim], signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a request hung"

    expected = model.generate(["ROMEO:"] * len(seeds), length, seed=seeds)
    on_victim = [s for s in seeds if replica_of[s] == victim]
    survivors = [s for s in seeds if replica_of[s] != victim]
    assert survivors, replica_of  # the proxy spread the streams over both replicas
    # In flight on the dead replica: a clean failure, the client raises; never wrong text.
    failed = [s for s in on_victim if isinstance(outcome[s], openai.APIError)]
    assert failed and all(outcome[s] == expected[s] for s in on_victim if s not in failed)
    for seed in survivors:
        assert outcome[seed] == expected[seed], f"seed {seed} on the surviving replica"
    for seed in seeds[:4]:
        result = outcome[-seed - 1]
        assert isinstance(result, openai.APIError) or result == expected[seed], seed

    # Ray replaces the dead replica; the service answers throughout.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        reply = client.completions.create(model=ray_server.model, prompt="ROMEO:",
                                          max_tokens=30, seed=1)
        assert reply.choices[0].text == model.generate("ROMEO:", 30, seed=1)
        fresh = replica_pids(ray_server.url, tries=10)
        if len(fresh) == 2 and victim not in fresh:
            break
        time.sleep(1)
    else:
        raise AssertionError("Ray did not restart the killed replica")
    assert set(fresh.values()).isdisjoint({pids[victim]})
