"""Serving settings: one type for `bard serve` and for each Ray Serve replica, the one place
that builds the engine over them, and the ready line every way of serving prints (and that
tests and benches read back with `parse_ready`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Literal

import bard_sdk
from bard_sdk.display import printable
from bard_sdk.engine import DEFAULT_MAX_ACTIVE, DEFAULT_MAX_QUEUED
from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """What a server loads and how: `bard serve`'s options, and the application arguments
    of a Serve config file (`args:`), which each replica loads."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="artifact directory, the same path on every "
                                                "node (default: the bundled model)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    variant: Literal["fp32", "int8"] = "fp32"
    threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads per "
                                                        "replica (default: its CPUs)")
    max_active: int = Field(DEFAULT_MAX_ACTIVE, ge=1, description="rows in each engine's batch")
    max_queued: int = Field(DEFAULT_MAX_QUEUED, ge=1)
    name: str | None = Field(None, description="model id in the API (default: manifest name)")


@dataclass(frozen=True)
class Served:
    """A loaded model, the engine over it and the id the API calls it by."""

    model: bard_sdk.Model
    engine: bard_sdk.Engine
    model_id: str


def build_engine(settings: ServeSettings, threads: int | None = None) -> Served:
    """Load the artifact and start its engine. `threads` overrides `settings.threads` (a
    replica sized by the CPUs it reserved). onnxruntime's workers sleep between calls
    (spin=False): the event loop and the callers share the cores."""
    model = bard_sdk.load(settings.model, device=settings.device, variant=settings.variant,
                          threads=threads if threads is not None else settings.threads,
                          spin=False)
    engine = bard_sdk.Engine(model, max_active=settings.max_active,
                             max_queued=settings.max_queued)
    return Served(model, engine, settings.name or model.manifest.name)


READY = re.compile(r"bard serve: (\S+) on \w+ at (http://\S+)")


def host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def print_ready(model_id: str, where: str, host: str, port: int, detail: str = "") -> None:
    """The line that says the server is ready and where: `bard serve: MODEL on DEVICE at URL
    (...)`, on stderr (the model id escaped for the terminal)."""
    extra = f"{detail}; " if detail else ""
    print(f"bard serve: {printable(model_id)} on {where} at http://{host_in_url(host)}:{port} "
          f"({extra}OpenAI API under /v1, playground at /)", file=sys.stderr, flush=True)


def parse_ready(line: str) -> tuple[str, str] | None:
    """(model id, base URL) from a ready line, or None for any other line."""
    match = READY.search(line)
    return None if match is None else (match.group(1), match.group(2))
