"""`bard serve --ray` on a real local Ray instance: 2 replicas, CPU only, through Ray's proxy.

The instance belongs to the `bard serve --ray` process this module starts, in a session of its
own: stopping that process shuts Serve and Ray down, and whatever is left in its session (found
by the session id, which is the pid we hold) is killed before the module ends.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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
