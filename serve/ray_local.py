"""`bard serve --ray`: a local Ray instance running the bard deployment until a signal.

The instance is this process's own (`ray.init(address="local")`, never a cluster found through
RAY_ADDRESS), so stopping `bard serve` stops exactly what it started: Serve drains and closes
each replica's engine, then `ray.shutdown()` ends the Ray processes this driver launched.
A cluster is deployed with a Serve config file instead (docs/ray-serve.yaml).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import bard_sdk

from .guard import front_door
from .ray import DEPLOYMENT, build
from .ray_settings import BardArgs, RayServeError, Scaling, threads_for
from .settings import print_ready

# The local instance moves only small messages between processes (prompts, text pieces).
OBJECT_STORE_BYTES = 128 * 2**20


@dataclass(frozen=True)
class LocalOptions:
    args: BardArgs
    scaling: Scaling
    host: str = "127.0.0.1"
    port: int = 8000


def probe_port(host: str, port: int) -> int:
    """The port Ray's proxy will bind: `port` if it is free now, or one the kernel picks for
    port 0. The proxy binds it itself a moment later; a port in use is refused here, before
    Ray starts, instead of leaving Serve without its proxy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise RayServeError(f"cannot serve on {host}:{port}: {err.strerror or err}"
                                ) from None
        return int(sock.getsockname()[1])


def resolve_model(args: BardArgs) -> tuple[BardArgs, str]:
    """The artifact as an absolute path (replicas run in other directories) and its model id;
    a missing or broken artifact is reported here, before any Ray process starts."""
    directory = bard_sdk.bundled_model_path() if args.model is None else Path(args.model)
    manifest = bard_sdk.read_manifest(directory)
    return (args.model_copy(update={"model": str(directory.resolve())}),
            args.name or manifest.name)


def why_not_started(err: RuntimeError) -> str:
    """The replica's own error (the last line of the traceback Serve keeps in the
    deployment's status), else Ray's message."""
    from ray import serve

    try:
        status = serve.status().applications[DEPLOYMENT]
        messages = [d.message for d in status.deployments.values() if d.message]
    except KeyError:
        messages = []
    lines = [line.strip() for line in (messages or [str(err)])[0].splitlines() if line.strip()]
    return re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", lines[-1]) if lines else str(err)


def wait_for_signal() -> None:
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def run_local(options: LocalOptions) -> None:
    """Start Ray, deploy, print the URL, serve until SIGINT/SIGTERM, then stop it all."""
    args, model_id = resolve_model(options.args)
    guard, warning = front_door(options.host, args.guard())
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    if guard.allowed_hosts is not None:  # a loopback bind: the replicas check the Host names
        args = args.model_copy(update={"allowed_hosts": sorted(guard.allowed_hosts)})
    port = probe_port(options.host, options.port)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING,
             object_store_memory=OBJECT_STORE_BYTES, configure_logging=True)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # this driver: only what matters
    try:
        resources = ray.cluster_resources()
        options.scaling.check_fits(resources.get("CPU", 0.0), resources.get("GPU", 0.0))
        quiet = {"log_level": "WARNING", "enable_access_log": False}
        serve.start(http_options={"host": options.host, "port": port},
                    proxy_location="HeadOnly", logging_config=quiet)
        try:
            serve.run(build(args, options.scaling), name=DEPLOYMENT, route_prefix="/",
                      logging_config=quiet)
        except RuntimeError as err:  # Ray reports a replica that failed to start this way
            raise RayServeError(f"the deployment did not start: {why_not_started(err)}"
                                ) from None
        scaling = options.scaling
        count = (f"{scaling.autoscale[0]}-{scaling.autoscale[1]} replicas (autoscaling)"
                 if scaling.autoscale else f"{scaling.replicas} replica(s)")
        threads = args.threads or threads_for(scaling.num_cpus)
        print_ready(model_id, "ray", options.host, port,
                    f"{count}, {scaling.num_cpus:g} CPU and {threads} thread(s) each")
        wait_for_signal()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
