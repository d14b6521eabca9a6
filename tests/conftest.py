"""Shared fixtures: one tiny trained run and its exported artifact, built once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY = dict(embedding_dim=16, hidden_size=48, num_layers=2, dropout=0.1, batch_size=16,
            seq_len=32, max_steps=60, eval_interval=30, warmup_steps=5, val_streams=4)


def bard_cli(*args: str, check: bool = False, timeout: float = 300,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `bard` entry point in a subprocess."""
    result = subprocess.run([sys.executable, "-m", "bard", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"bard {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def wrapped(model: Any, factory: Callable[[Any], Any]) -> tuple[Any, Any]:
    """`model.with_runner(factory)` and the wrapper it made: the documented seam for counting
    or failing graph calls without touching the model's internals."""
    made: list[Any] = []
    view = model.with_runner(lambda inner: made.append(factory(inner)) or made[-1])
    return view, made[0]


def log_probs(model: Any, text: str) -> np.ndarray:
    """float64 log-probabilities [len(text), vocab]: row t predicts character t + 1."""
    ids = model.encode(text)[None, :]
    logits, _, _ = model.forward(ids, *model.zero_state(1))
    z = logits[0].astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer LSTM trained for 60 steps on the bundled corpus (seconds on a CPU)."""
    from bard.training.train import RunRequest, train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(RunRequest(out=run_dir, preset="tiny", overrides=dict(TINY), device="cpu",
                     show_progress=False))
    return run_dir


@pytest.fixture(scope="session")
def tiny_artifact(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported with an int8 variant, through the real parity gate."""
    from bard.export.export import ExportRequest, export_run

    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    export_run(ExportRequest(run_dir=tiny_run, out=out, quantize="int8"))
    return out


@pytest.fixture
def artifact_copy(tiny_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny artifact that a test may damage."""
    target = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, target)
    return target


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> Any:
    """The tiny model, loaded once per module (the fixture most SDK and server tests share)."""
    import bard_sdk
    return bard_sdk.load(tiny_artifact, device="cpu")

