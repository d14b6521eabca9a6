"""bard_sdk: batched, stateful character generation from bard artifacts on onnxruntime.

    import bard_sdk
    bard_sdk.generate("ROMEO:")                      # the bundled Shakespeare model
    model = bard_sdk.load("artifacts/shakespeare")   # or any exported artifact
    model.generate(["ROMEO:", "JULIET:"], seed=[1, 2], temperature=0.8)

Depends on numpy and onnxruntime only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .chat_template import DEFAULT_CHAT_TEMPLATE, ChatPrompt, ChatTemplate
from .decoding import Generator, LogitsProcessor
from .engine import Completion, Engine, Request
from .errors import (
    ArtifactError,
    BardError,
    DeviceError,
    EngineClosed,
    EngineOverloaded,
    InvalidArgumentError,
    UnknownCharacterError,
)
from .manifest import FORMAT_VERSION, Manifest, read_manifest
from .model import Model, Score
from .penalties import PenaltyArguments
from .processors import BanCharacters, RepetitionPenalty
from .scoring import Scorer, score_stream
from .session import Session

__all__ = [
    "DEFAULT_CHAT_TEMPLATE", "FORMAT_VERSION", "ArtifactError", "BanCharacters", "BardError",
    "ChatPrompt", "ChatTemplate", "Completion",
    "DeviceError", "Engine", "EngineClosed", "EngineOverloaded", "Generator",
    "InvalidArgumentError", "LogitsProcessor", "Manifest", "Model", "PenaltyArguments",
    "RepetitionPenalty",
    "Request", "Score", "Scorer", "Session", "UnknownCharacterError", "bundled_model_path",
    "generate", "load", "read_manifest", "score_stream",
]

BUNDLED_MODEL = "shakespeare"
_cache: dict[tuple[str, str, int | None], Model] = {}
_cache_lock = threading.Lock()


def bundled_model_path() -> Path:
    """Where the model shipped inside the package lives."""
    path = Path(str(resources.files("bard_sdk.artifacts").joinpath(BUNDLED_MODEL)))
    if not (path / "manifest.json").is_file():
        raise ArtifactError(f"no bundled model found at {path}; pass a path to load()")
    return path


def load(path: str | Path | None = None, *, device: str = "auto", variant: str = "fp32",
         threads: int | None = None, spin: bool = True) -> Model:
    """Load an artifact directory (default: the bundled model), verified against its manifest.

    `threads` sizes onnxruntime's intra-op pool (default: one per core); `spin=False` lets its
    workers sleep between calls instead of spin-waiting, for a process whose other threads
    (an event loop, callers) need the cores too, as in `bard serve`."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    directory = bundled_model_path() if path is None else Path(path)
    return Model(directory, device=device, variant=variant, threads=threads, spin=spin)


def generate(prompt: str | Sequence[str], max_new_chars: int = 200, **options: object
             ) -> str | list[str]:
    """Generate with the bundled model, loaded once per process and cached."""
    key = (BUNDLED_MODEL, "auto", None)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load()
        model = _cache[key]
    return model.generate(prompt, max_new_chars, **options)  # type: ignore[arg-type]
