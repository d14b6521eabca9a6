"""Ray Serve: the `bard serve` HTTP API as replicas on a Ray cluster (local or KubeRay).

A replica is one `BardDeployment` actor. It loads the artifact once, runs one `bard_sdk.Engine`
(the engine batches at every decode step; Ray's `@serve.batch` would only group whole
requests, so it is not used) and serves the very app `bard serve` serves (`create_app`), built
after the engine exists through Ray's late-bound ingress (`__serve_build_asgi_app__`), behind
the same front door (API key, CORS, body limit, Host check: `BardArgs`). Ray adds
what one process cannot: the HTTP proxy that spreads requests over replicas, restarts of dead
replicas, autoscaling, and placement of replicas on nodes by their CPUs and GPUs.

    serve run bard.serve.ray:app                                 # bundled model, 1 replica
    serve run bard.serve.ray:build_app model=/shared/artifacts/x # any artifact
    serve deploy docs/ray-serve.yaml                             # a cluster
    bard serve --ray --replicas 2                                # a local Ray instance
"""

from __future__ import annotations

import os
from typing import Any

import bard_sdk
import ray
from bard_sdk.engine import DEFAULT_MAX_ACTIVE, DEFAULT_MAX_QUEUED
from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .app import create_app
from .ray_settings import BardArgs, Scaling, deployment_options, threads_for
from .settings import build_engine

DEPLOYMENT = "bard"
# Each replica answers with this header: which replica served a request (logs, debugging).
REPLICA_HEADER = "x-bard-replica"


def replica_threads(threads: int | None) -> int:
    """As asked, else as many as the CPUs Ray reserved for this replica."""
    if threads is not None:
        return threads
    return threads_for(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))


class ReplicaHeader:
    """ASGI middleware: name the replica in every response's headers."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


@serve.deployment(
    name=DEPLOYMENT,
    # The engine is the batch: let each replica hold a full batch of requests, and bound the
    # queue in front of it (past it Ray's proxy answers 503).
    max_ongoing_requests=DEFAULT_MAX_ACTIVE,
    max_queued_requests=DEFAULT_MAX_QUEUED,
    ray_actor_options={"num_cpus": 1},
    health_check_period_s=5,
)
@serve.ingress()
class BardDeployment:
    """One replica: the artifact loaded once, one engine, the `bard serve` routes over it."""

    def __init__(self, args: BardArgs | None = None) -> None:
        args = args or BardArgs()
        self.threads = replica_threads(args.threads)
        self.guard = args.guard()  # the key from this replica's $BARD_API_KEY when not given
        served = build_engine(args, threads=self.threads)
        self.model, self.engine, self.model_id = served.model, served.engine, served.model_id
        self.replica = serve.get_replica_context().replica_tag

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Called by Ray after `__init__`: the same app as `bard serve`, over this engine."""
        app = create_app(self.engine, self.model_id,
                         replica={"id": self.replica, "pid": os.getpid(),
                                  "device": self.model.device, "threads": self.threads},
                         guard=self.guard)
        app.add_middleware(ReplicaHeader, replica=self.replica)
        return app

    def check_health(self) -> None:
        """Ray's periodic health check: a replica whose engine has stopped is replaced."""
        if self.engine.closed:
            raise bard_sdk.BardError("the engine of this replica is closed")


def build(args: BardArgs, scaling: Scaling | None = None) -> Application:
    """The bard application: one deployment, replicas as `scaling` says."""
    options = deployment_options(args, scaling or Scaling())
    return BardDeployment.options(**options).bind(args)


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for `serve run` / `serve deploy` (`import_path:
    bard.serve.ray:build_app`, `args:` as in `BardArgs`); replicas and resources come from
    the config file's `deployments` section."""
    return build(BardArgs.model_validate(args))


# `serve run bard.serve.ray:app`: the bundled model with default settings.
app = build(BardArgs())
