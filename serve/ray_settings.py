"""Settings of the Ray Serve deployment, checked before Ray is imported or started.

`BardArgs` (settings.py's `ServeSettings`) is what each replica loads (a Serve config file's
application `args`): the model, the engine, the front door (API key, CORS, body limit and
timeout, Host names) and the drain; `Scaling` how many replicas run and what each reserves;
`deployment_options` maps both onto Serve's options.

What does not apply under Ray: the connections themselves (`--header-timeout-s`,
`--max-connections`, keep-alive) are Ray's HTTP proxy's, set with Serve's `http_options`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import bard_sdk

from .settings import ServeSettings


class RayServeError(bard_sdk.BardError):
    """Settings Ray cannot run, or a deployment that did not start."""


BardArgs = ServeSettings  # what each replica loads: the same settings as `bard serve`


@dataclass(frozen=True)
class Scaling:
    """How many replicas, and what each one reserves on its node."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min_replicas, max_replicas)
    target_ongoing: int | None = None  # requests per replica the autoscaler aims at
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise RayServeError(f"replicas must be at least 1, got {self.replicas}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise RayServeError(
                    f"autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {low}:{high}")
        if self.target_ongoing is not None and self.target_ongoing < 1:
            raise RayServeError(f"target_ongoing must be at least 1, got {self.target_ongoing}")
        for name, value in (("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus)):
            if not value >= 0:  # also refuses NaN
                raise RayServeError(f"{name} must be a number >= 0, got {value}")

    @property
    def initial_replicas(self) -> int:
        """Replicas started at once (an autoscaler that may go to zero starts with one)."""
        return max(self.autoscale[0], 1) if self.autoscale else self.replicas

    def check_fits(self, cpus: float, gpus: float) -> None:
        """Refuse what a machine with these CPUs and GPUs cannot place (Ray would wait for
        it forever)."""
        count = self.initial_replicas
        for kind, each, offered in (("CPU", self.num_cpus, cpus), ("GPU", self.num_gpus, gpus)):
            if count * each > offered:
                raise RayServeError(
                    f"{count} replica(s) x {each:g} {kind} need {count * each:g} {kind}s; this "
                    f"machine offers Ray {offered:g} (lower --num-{kind.lower()}s or the "
                    "replicas)")


def threads_for(cpus: float) -> int:
    """onnxruntime threads for a replica that reserved `cpus` CPUs: replicas sharing a machine
    then share its cores instead of each starting a pool as wide as the machine."""
    return max(1, math.ceil(cpus))


def deployment_options(args: BardArgs, scaling: Scaling) -> dict[str, Any]:
    """Serve deployment options for these settings (a config file's `deployments` entry
    overrides them field by field)."""
    options: dict[str, Any] = {
        "max_ongoing_requests": args.max_active,
        "max_queued_requests": args.max_queued,
        # Serve waits this long for a stopping replica's requests, then kills it.
        "graceful_shutdown_timeout_s": args.drain_s,
        "ray_actor_options": {"num_cpus": scaling.num_cpus, "num_gpus": scaling.num_gpus},
    }
    if scaling.autoscale is None:
        options["num_replicas"] = scaling.replicas
    else:
        low, high = scaling.autoscale
        options["autoscaling_config"] = {
            "min_replicas": low, "initial_replicas": scaling.initial_replicas,
            "max_replicas": high,
            # Continuous batching wants many requests per replica: half a batch by default.
            "target_ongoing_requests": scaling.target_ongoing or max(1, args.max_active // 2),
        }
    return options
