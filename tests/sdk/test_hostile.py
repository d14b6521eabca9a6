"""Hostile models: the self-containment scan refuses every external reference and every
encoding it cannot read exactly as onnxruntime does; behind it, a session never reads a file."""

from __future__ import annotations

from pathlib import Path

import bard_sdk
import numpy as np
import onnxruntime as ort
import pytest
from bard_sdk import runtime
from bard_sdk.onnx_scan import check_self_contained

from tests.sdk import hostile

LOCATIONS = {"relative": "sentinel.bin", "dot-dot": "../sentinel.bin", "absolute": None}
CPU = ["CPUExecutionProvider"]


@pytest.fixture
def sentinel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file of the user's in the working directory that a hostile model wants to read."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    hostile.write_sentinel(work / "sentinel.bin")
    hostile.write_sentinel(tmp_path / "sentinel.bin")  # for the ../ location
    return work / "sentinel.bin"


def location(kind: str, sentinel: Path) -> str:
    return LOCATIONS[kind] or str(sentinel)


def unoptimised(options: ort.SessionOptions) -> ort.SessionOptions:
    # Graph optimisation happens to trip over external data loaded from bytes in some
    # onnxruntime versions; without it only the session's own settings stand in the way.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def plain_run(model: bytes) -> np.ndarray | None:
    """What bare onnxruntime (no bard settings) computes for X = 0, or None if it refuses."""
    options = unoptimised(ort.SessionOptions())
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model, options, providers=CPU)
    except runtime.MODEL_ERRORS:  # only "did it load" matters here
        return None
    return session.run(None, {"X": np.zeros(4, np.float32)})[0]


def test_plain_models_pass(tiny_artifact: Path) -> None:
    check_self_contained(hostile.add_model(None))
    check_self_contained((tiny_artifact / "model.onnx").read_bytes())
    check_self_contained((tiny_artifact / "model.int8.onnx").read_bytes())


@pytest.mark.parametrize("kind", LOCATIONS)
@pytest.mark.parametrize("where", list(hostile.hostile_models("x")))
def test_every_external_reference_is_refused(where: str, kind: str, sentinel: Path) -> None:
    model = hostile.hostile_models(location(kind, sentinel))[where]
    with pytest.raises(bard_sdk.ArtifactError, match="external data"):
        check_self_contained(model)


@pytest.mark.parametrize("trick", list(hostile.wire_tricks("x")))
def test_encodings_onnxruntime_reads_differently_are_refused(trick: str,
                                                             sentinel: Path) -> None:
    model = hostile.wire_tricks("sentinel.bin")[trick]
    with pytest.raises(bard_sdk.ArtifactError, match=r"unambiguously|external data"):
        check_self_contained(model)


def test_the_tag_tricks_are_real(sentinel: Path) -> None:
    """Control: bare onnxruntime follows the hidden initializer of both tag tricks into the
    working directory, so refusing them above is what keeps the sentinel private."""
    tricks = hostile.wire_tricks("sentinel.bin")
    for trick in ("tag with bit 32 set", "overlong tag (padded with a zero byte)"):
        out = plain_run(tricks[trick])
        assert out is not None and np.array_equal(out, hostile.SENTINEL), trick


@pytest.mark.parametrize("kind", LOCATIONS)
def test_session_cannot_read_a_file_the_scan_missed(kind: str, sentinel: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The second wall: even a model that reached onnxruntime (scan bypassed) cannot resolve
    external data outside an empty directory."""
    model = hostile.add_model(location(kind, sentinel))
    if kind == "relative":  # control: without bard's settings the sentinel is read
        assert np.array_equal(plain_run(model), hostile.SENTINEL)
    options = runtime.session_options
    monkeypatch.setattr(runtime, "session_options", lambda t: unoptimised(options(t)))
    with pytest.raises(bard_sdk.ArtifactError, match="onnxruntime cannot load"):
        runtime.create_session(model, "cpu", runtime.ThreadSettings(1))


@pytest.mark.parametrize("kind", LOCATIONS)
def test_hostile_artifact_never_reads_the_working_directory(
        kind: str, artifact_copy: Path, sentinel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole artifact whose output bias points at the user's file, with a manifest that
    matches (the attacker writes both) and the scan monkeypatched to miss it."""
    size = hostile.externalise_head_bias(artifact_copy, location(kind, sentinel))
    for path in (sentinel, sentinel.parent.parent / "sentinel.bin"):
        hostile.write_sentinel(path, size)
    with pytest.raises(bard_sdk.ArtifactError, match="external data"):
        bard_sdk.load(artifact_copy)
    monkeypatch.setattr("bard_sdk.model.check_self_contained", lambda data: None)
    with pytest.raises(bard_sdk.ArtifactError, match="onnxruntime cannot load"):
        bard_sdk.load(artifact_copy)
