"""`GET /metrics`: the server's numbers in Prometheus' text format (`prometheus-client`).

One `ServerMetrics` per app, with its own registry (two apps in one process never share
series; under Ray Serve each replica is a process with its own app and registry, and every
series carries a `replica` label). What it counts and where from:

- `bard_requests_total{route, status}`: every HTTP response, counted by `CountRequests`, the
  outermost middleware (refusals of the front door included); `route` is the route's path
  template, "unmatched" for paths no route serves (the label's values stay bounded);
- `bard_prompt_characters_total`, `bard_generated_characters_total`, `bard_active_rows`,
  `bard_queued_requests`, `bard_engine_steps_total`, `bard_requests_completed_total`: read from
  `Engine.stats()` when scraped (no work per request);
- `bard_step_seconds`, `bard_time_to_first_character_seconds`: histograms the engine's loop
  feeds through its observer hook (`Engine.observer`): one `observe` per step and per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bard_sdk import Engine
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A step is ~0.3 ms (batch 1, tiny model) to ~50 ms (a long prefill chunk beside 64 rows).
STEP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
FIRST_CHARACTER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class EngineCollector(Collector):
    """The engine's counts, read from `Engine.stats()` at each scrape."""

    def __init__(self, engine: Engine, labels: dict[str, str]) -> None:
        self.engine, self.labels = engine, labels

    def collect(self) -> Iterator[Any]:
        stats = self.engine.stats()
        names, values = list(self.labels), list(self.labels.values())
        for kind, name, key, text in (
                (CounterMetricFamily, "bard_prompt_characters", "prompt_chars",
                 "Prompt characters admitted to the engine"),
                (CounterMetricFamily, "bard_generated_characters", "generated_chars",
                 "Characters the engine generated"),
                (CounterMetricFamily, "bard_engine_steps", "steps", "Decode steps run"),
                (CounterMetricFamily, "bard_requests_completed", "completed",
                 "Engine requests that ended after admission"),
                (GaugeMetricFamily, "bard_active_rows", "active",
                 "Rows in flight (reading their prompt or generating)"),
                (GaugeMetricFamily, "bard_queued_requests", "queued",
                 "Requests waiting for a row"),
                (GaugeMetricFamily, "bard_max_active_rows", "max_active",
                 "Rows the batch may hold")):
            family = kind(name, text, labels=names)
            family.add_metric(values, stats[key])
            yield family


class ServerMetrics:
    """The registry of one app and the engine observer that feeds its histograms."""

    def __init__(self, engine: Engine, replica: str | None = None) -> None:
        labels = {} if replica is None else {"replica": replica}
        self.registry = CollectorRegistry()
        names = list(labels)
        self.requests = Counter("bard_requests", "HTTP responses by route and status",
                                [*names, "route", "status"], registry=self.registry)
        self.step_seconds = Histogram("bard_step_seconds", "Seconds per engine step",
                                      names, buckets=STEP_BUCKETS, registry=self.registry)
        self.first_character_seconds = Histogram(
            "bard_time_to_first_character_seconds",
            "Seconds from a request's submit to its first character",
            names, buckets=FIRST_CHARACTER_BUCKETS, registry=self.registry)
        self.registry.register(EngineCollector(engine, labels))
        self.labels = labels
        # Children resolved once: the engine's thread then does one observe per call.
        step = self.step_seconds.labels(**labels) if labels else self.step_seconds
        first = (self.first_character_seconds.labels(**labels) if labels
                 else self.first_character_seconds)
        self.step = step.observe
        self.first_character = first.observe
        engine.observer = self

    def count(self, route: str, status: int) -> None:
        self.requests.labels(**self.labels, route=route, status=str(status)).inc()

    async def endpoint(self) -> Response:
        """GET /metrics."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class CountRequests:
    """ASGI middleware (outermost): counts each response by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: list[Any]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            self.metrics.count(self.route_of(scope), status or 500)

    def route_of(self, scope: Scope) -> str:
        """The matched route's template; for a request refused before routing (401, 413,
        421), the route it was addressed to; "unmatched" for none."""
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        for candidate in self.routes:
            if candidate.matches(scope)[0] is not Match.NONE:
                return str(candidate.path)
        return "unmatched"
