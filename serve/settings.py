"""Serving settings: one type for `bard serve` and for each Ray Serve replica, the one place
that builds the engine over them, and the ready line every way of serving prints (and that
tests and benches read back with `parse_ready`).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Literal

import bard_sdk
from bard_sdk.display import printable
from bard_sdk.engine import DEFAULT_MAX_ACTIVE, DEFAULT_MAX_QUEUED
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .guard import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BODY_BYTES, Guard

API_KEY_ENV = "BARD_API_KEY"
# On SIGTERM/SIGINT (or a replica stopped by Ray), requests in flight get this long to finish.
DEFAULT_DRAIN_S = 10.0


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
    # The front door (guard.py): the same on every replica.
    api_key: SecretStr | None = Field(None, description="require 'Authorization: Bearer KEY' "
                                      f"on /v1 (default: ${API_KEY_ENV} if set, else none)")
    cors_origins: list[str] = Field(default_factory=list, description="browser origins "
                                    "allowed (CORS; default: none)")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1, description="largest request "
                                "body; past it: 413")
    body_timeout_s: float = Field(DEFAULT_BODY_TIMEOUT_S, gt=0, description="seconds between "
                                  "two parts of a body; past it: 408")
    allowed_hosts: list[str] | None = Field(None, description="Host header names answered "
                                            "(default: any; a loopback bind: its own names)")
    drain_s: float = Field(DEFAULT_DRAIN_S, ge=0, le=3600, description="seconds requests in "
                           "flight get to finish when the server (a replica) stops")

    def guard(self) -> Guard:
        """The front door's settings; the key from $BARD_API_KEY when none is given."""
        key = (self.api_key.get_secret_value() if self.api_key is not None
               else os.environ.get(API_KEY_ENV))
        return Guard(max_body_bytes=self.max_body_bytes, body_timeout_s=self.body_timeout_s,
                     api_key=key or None, cors_origins=tuple(self.cors_origins),
                     allowed_hosts=None if self.allowed_hosts is None
                     else frozenset(self.allowed_hosts))


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
