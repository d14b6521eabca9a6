"""`bard serve --ray` on a real local Ray instance: 2 replicas, CPU only, through Ray's proxy.

The instance belongs to the `bard serve --ray` process this module starts, in a session of its
own: stopping that process shuts Serve and Ray down, and whatever is left in its session (found
by the session id, which is the pid we hold) is killed before the module ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import bard_sdk
import httpx
import pytest
from bard.bench.procfs import all_stat_fields

from tests.cli.test_cli import assert_one_line_error
from tests.conftest import ROOT, bard_cli
from tests.serve.conftest import Server, start_server, stop_server

pytest.importorskip("ray.serve", reason="bard serve --ray needs the ray extra: "
                                        "pip install 'bard[ray]'")
openai = pytest.importorskip("openai")
yaml = pytest.importorskip("yaml")

from bard.serve.ray import DEPLOYMENT, REPLICA_HEADER, build_app  # noqa: E402
from bard.serve.ray_settings import (  # noqa: E402
    BardArgs,
    RayServeError,
    Scaling,
    deployment_options,
)
from ray.serve import Application  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402


def session_pids(session: int) -> list[int]:
    """Live processes whose session id is `session`."""
    return [pid for pid, fields in all_stat_fields()
            if int(fields[3]) == session and fields[0] != "Z"]


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


# ---------------------------------------------------------------- settings (no Ray started)


def test_deployment_options_let_the_engine_batch() -> None:
    args = BardArgs(max_active=48, max_queued=100)
    fixed = deployment_options(args, Scaling(replicas=3, num_cpus=0.5))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    # a replica takes a full batch of requests (Ray's default would be 5), the queue is bounded
    assert (fixed["max_ongoing_requests"], fixed["max_queued_requests"]) == (48, 100)
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.0}
    # a stopping replica's requests get --drain-s before Serve kills it
    assert fixed["graceful_shutdown_timeout_s"] == 10.0
    assert deployment_options(BardArgs(drain_s=2.5), Scaling())[
        "graceful_shutdown_timeout_s"] == 2.5
    scaled = deployment_options(args, Scaling(autoscale=(0, 4), num_gpus=1))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 0, "initial_replicas": 1,
                                            "max_replicas": 4, "target_ongoing_requests": 24}
    assert deployment_options(args, Scaling(autoscale=(1, 2), target_ongoing=7))[
        "autoscaling_config"]["target_ongoing_requests"] == 7


@pytest.mark.parametrize(("scaling", "needle"), [
    (dict(replicas=0), "replicas must be at least 1"),
    (dict(autoscale=(3, 1)), "autoscale needs"),
    (dict(autoscale=(0, 0)), "autoscale needs"),
    (dict(target_ongoing=0), "target_ongoing"),
    (dict(num_cpus=float("nan")), "num_cpus"),
    (dict(num_gpus=-1), "num_gpus"),
])
def test_scaling_refuses_settings_ray_cannot_run(scaling: dict[str, object],
                                                 needle: str) -> None:
    with pytest.raises(RayServeError, match=needle):
        Scaling(**scaling)  # type: ignore[arg-type]


def test_scaling_must_fit_the_machine() -> None:
    Scaling(replicas=2, num_cpus=1).check_fits(cpus=2, gpus=0)
    Scaling(autoscale=(1, 64), num_cpus=2).check_fits(cpus=2, gpus=0)  # more may come later
    with pytest.raises(RayServeError, match=r"3 replica.* need 3 CPUs; this machine offers"):
        Scaling(replicas=3).check_fits(cpus=2, gpus=0)
    with pytest.raises(RayServeError, match="need 1 GPUs"):
        Scaling(num_gpus=1).check_fits(cpus=2, gpus=0)


def test_serve_config_file_deploys_bard() -> None:
    """docs/ray-serve.yaml is a valid `serve deploy` file whose application builds."""
    config = yaml.safe_load((ROOT / "docs" / "ray-serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == "bard.serve.ray:build_app"
    assert isinstance(build_app(application["args"]), Application)
    (deployment,) = application["deployments"]
    assert deployment["name"] == DEPLOYMENT
    assert deployment["max_ongoing_requests"] == application["args"]["max_active"]
    with pytest.raises(ValueError, match="modle"):
        build_app({"modle": "/x"})  # a typo in a config file is refused, not ignored


@pytest.mark.parametrize(("args", "needle"), [
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--ray", "--replicas", "2", "--autoscale", "1:2"], "not both"),
    (["--ray", "--autoscale", "3"], "MIN:MAX"),
    (["--ray", "--threads", "0"], "--threads"),
    (["--ray", "--model", "/nonexistent/artifact"], "not found"),
    # Ray's proxy owns the connections: options of bard serve's own HTTP server are refused
    (["--ray", "--max-connections", "4"], "--max-connections does not apply with --ray"),
    (["--ray", "--header-timeout-s", "2"], "--header-timeout-s does not apply with --ray"),
    (["--ray", "--drain-s", "-1"], "--drain-s"),
])
def test_cli_refuses_bad_ray_settings_before_starting_ray(args: list[str], needle: str) -> None:
    assert_one_line_error(bard_cli("serve", "--port", "0", *args, timeout=60), needle)


def test_cli_refuses_a_port_in_use_before_starting_ray(tiny_artifact: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = bard_cli("serve", "--ray", "--model", str(tiny_artifact), "--port", port,
                          timeout=60)
    assert_one_line_error(result, f"cannot serve on 127.0.0.1:{port}")


# ---------------------------------------------------------------- a real local Ray instance


def test_replica_settings_carry_the_front_door(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a replica loads holds the front door; the key stays out of reprs, and a replica
    given none takes $BARD_API_KEY (a Serve config file's runtime_env)."""
    args = BardArgs.model_validate({"api_key": "sekrit", "cors_origins": ["http://a.example"],
                                    "max_body_bytes": 5, "allowed_hosts": ["localhost"]})
    assert "sekrit" not in repr(args) and "sekrit" not in args.model_dump_json()
    guard = args.guard()
    assert (guard.api_key, guard.cors_origins, guard.max_body_bytes) == (
        "sekrit", ("http://a.example",), 5)
    assert guard.allowed_hosts == frozenset({"localhost"})
    monkeypatch.setenv("BARD_API_KEY", "from-env")
    assert BardArgs().guard().api_key == "from-env"
    assert BardArgs().guard().allowed_hosts is None  # a cluster's proxy: any Host name
    with pytest.raises(ValueError, match="max_body_bytes"):
        BardArgs(max_body_bytes=0)


API_KEY = "ray-test-key"
ORIGIN = "http://allowed.example"


@pytest.fixture(scope="module")
def ray_server(tiny_artifact: Path) -> Iterator[Server]:
    running = start_server(tiny_artifact, "--ray", "--replicas", "2", "--num-cpus", "1",
                           "--max-active", "16", "--api-key", API_KEY, "--cors-origin", ORIGIN,
                           "--max-body-bytes", "100000", "--drain-s", "3",
                           timeout=240, new_session=True)
    try:
        yield running
    finally:
        left = stop_ray_server(running)
        assert running.process.returncode in (0, -signal.SIGTERM), running.log
        assert not left, f"Ray processes outlived bard serve --ray: {left}"


@pytest.fixture(scope="module")
def client(ray_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=ray_server.url + "/v1", api_key=API_KEY, max_retries=0,
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
                                            max_tokens=400, top_p=0.9, seed=9, stream=True))
    assert len(chunks) > 2, "the text arrives in pieces, through Ray's proxy too"
    assert "".join(c.choices[0].text for c in chunks) == model.generate(
        "KING", 400, top_p=0.9, seed=9)
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


def test_metrics_are_per_replica(ray_server: Server) -> None:
    """Each replica has its own registry: a scrape through the proxy reaches one replica,
    names it in the header, and every bard series carries that replica's label."""
    from prometheus_client.parser import text_string_to_metric_families

    seen: dict[str, float] = {}
    for _ in range(60):
        reply = httpx.get(ray_server.url + "/metrics", timeout=10)
        assert reply.status_code == 200
        replica = reply.headers[REPLICA_HEADER]
        samples = [s for f in text_string_to_metric_families(reply.text) for s in f.samples
                   if s.name.startswith("bard_")]
        assert samples and {s.labels.get("replica") for s in samples} == {replica}
        seen[replica] = next(s.value for s in samples if s.name == "bard_max_active_rows")
        if len(seen) == 2:
            break
    assert seen == dict.fromkeys(seen, 16.0) and len(seen) == 2, seen


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


# ------------------------------------------- issue 21's front door and disconnects under Ray
def from_both_replicas(send: Callable[[], httpx.Response], tries: int = 60
                       ) -> dict[str, httpx.Response]:
    """Replica id -> a reply it gave, sending until both replicas have answered."""
    replies: dict[str, httpx.Response] = {}
    for _ in range(tries):
        reply = send()
        replies[reply.headers[REPLICA_HEADER]] = reply
        if len(replies) == 2:
            break
    assert len(replies) == 2, "the proxy reached one replica only"
    return replies


def openai_error(reply: httpx.Response, status: int) -> dict[str, object]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_every_replica_has_the_front_door(ray_server: Server) -> None:
    """--api-key, --cors-origin, --max-body-bytes, the loopback Host check and the fair share
    of rows hold on every replica, through Ray's proxy, with OpenAI-shaped refusals."""
    url, key = ray_server.url, {"Authorization": f"Bearer {API_KEY}"}
    for reply in from_both_replicas(lambda: httpx.get(url + "/v1/models", timeout=30)).values():
        assert openai_error(reply, 401)["code"] == "invalid_api_key"
    for reply in from_both_replicas(lambda: httpx.get(url + "/v1/models", headers=key,
                                                      timeout=30)).values():
        assert reply.json()["data"][0]["id"] == ray_server.model
    rebound = from_both_replicas(lambda: httpx.get(
        url + "/v1/models", headers={**key, "Host": "rebound.example"}, timeout=30))
    assert all(openai_error(r, 421)["code"] == "misdirected_request" for r in rebound.values())
    big = {"model": ray_server.model, "prompt": "x" * 120_000}
    too_big = from_both_replicas(lambda: httpx.post(url + "/v1/completions", json=big,
                                                    headers=key, timeout=30))
    assert all(openai_error(r, 413)["code"] == "body_too_large" for r in too_big.values())
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(url + "/v1/completions", headers=preflight, timeout=30)
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(url + "/v1/models", headers={**key, "Origin": "http://evil.example"},
                      timeout=30)
    assert "access-control-allow-origin" not in other.headers
    too_many = httpx.post(url + "/v1/completions", headers=key, timeout=30, json={
        "model": ray_server.model, "prompt": "A", "max_tokens": 2, "n": 9})  # 16 rows / 2
    assert openai_error(too_many, 400)["param"] == "n"


def test_disconnects_free_rows_on_every_replica(ray_server: Server) -> None:
    """Clients that send long non-streaming and streaming requests and hang up: Ray's proxy
    cancels them, and each replica's rows are freed (its /health shows none active)."""
    where = urlsplit(ray_server.url)
    sockets = []
    for seed in range(8):
        body = json.dumps({"model": ray_server.model, "prompt": "ROMEO:",
                           "max_tokens": 100_000, "seed": seed,
                           "stream": seed % 2 == 1}).encode()
        sock = socket.create_connection((where.hostname, where.port), timeout=10)
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {where.netloc}\r\n"
                     f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        sockets.append(sock)

    def busy(replicas: int = 2) -> dict[str, int]:
        """Rows active per replica. Ray's router sends /health to the less busy replica, so
        while one generates the other may be all that answers (replicas=1)."""
        replies: dict[str, int] = {}
        for _ in range(60):
            reply = httpx.get(ray_server.url + "/health", timeout=30)
            replies[reply.headers[REPLICA_HEADER]] = reply.json()["active"]
            if len(replies) >= replicas:
                break
        assert len(replies) >= replicas, replies
        return replies

    deadline = time.monotonic() + 60
    while not any(busy(1).values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any(busy(1).values()), "the requests reached the replicas"
    for sock in sockets:
        sock.close()
    deadline = time.monotonic() + 30
    while any(busy().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(busy().values()), busy()
