"""The parity gate refuses what is really wrong, naming the check, and passes float32 rounding.

Each damaged artifact below is the tiny fixture's own graph with one thing broken, re-hashed
so that bard_sdk loads it: the gate (not the loader) must refuse it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import bard_sdk
import numpy as np
import onnx
import pytest
from bard.export import export as export_module
from bard.export import parity
from bard.export.export import ExportRequest, QualityGateError, export_run
from bard.export.parity import LOGITS, STATE, Bound, ParityError, check_parity, measure_parity
from bard.training.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from onnx import numpy_helper

Mutation = Callable[[onnx.ModelProto], None]


def rehash(artifact: Path, variant: str = "fp32") -> None:
    manifest_file = artifact / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    entry = manifest["files"][variant]
    data = (artifact / entry["path"]).read_bytes()
    entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest_file.write_text(json.dumps(manifest, allow_nan=False))


def damaged(artifact: Path, mutate: Mutation, file: str = "model.onnx",
            variant: str = "fp32") -> None:
    graph = onnx.load(str(artifact / file))
    mutate(graph)
    onnx.save_model(graph, str(artifact / file))
    rehash(artifact, variant)


def lstm_nodes(graph: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in graph.graph.node if n.op_type in ("LSTM", "DynamicQuantizeLSTM")]


def edit_initializer(graph: onnx.ModelProto, name: str,
                     change: Callable[[np.ndarray], np.ndarray]) -> None:
    for i, tensor in enumerate(graph.graph.initializer):
        if tensor.name == name:
            array = change(numpy_helper.to_array(tensor).copy())
            graph.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, name))
            return
    raise AssertionError(f"no initializer {name}")


def nudge(position: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    def change(array: np.ndarray) -> np.ndarray:
        array[position] += 1e-3
        return array
    return change


def swap_input_and_forget_gates(array: np.ndarray) -> np.ndarray:
    """ONNX orders the gate blocks i, o, f, c along axis 1 (B holds W's four, then R's)."""
    hidden = array.shape[1] // (8 if array.ndim == 2 else 4)
    for offset in range(0, array.shape[1], 4 * hidden):
        i = array[:, offset: offset + hidden].copy()
        array[:, offset: offset + hidden] = array[:, offset + 2 * hidden: offset + 3 * hidden]
        array[:, offset + 2 * hidden: offset + 3 * hidden] = i
    return array


def weight(role: int, layer: int = 0) -> Callable[[onnx.ModelProto], str]:
    """The name of an LSTM input (1: W, 2: R, 3: B) of one layer."""
    return lambda graph: lstm_nodes(graph)[layer].input[role]


def perturbed(name_of: Callable[[onnx.ModelProto], str], position: tuple[int, ...]) -> Mutation:
    return lambda graph: edit_initializer(graph, name_of(graph), nudge(position))


def swapped_gates(graph: onnx.ModelProto) -> None:
    for role in (1, 2, 3):
        edit_initializer(graph, lstm_nodes(graph)[1].input[role], swap_input_and_forget_gates)


def dropped_biases(graph: onnx.ModelProto) -> None:
    lstm_nodes(graph)[0].input[3] = ""  # an LSTM without B: its biases are zero


def torch_model(tiny_run: Path):  # type: ignore[no-untyped-def]
    return model_from_checkpoint(load_checkpoint(find_checkpoint(tiny_run)))


@pytest.mark.parametrize(("mutate", "check"), [
    (perturbed(lambda g: "model.embedding.weight", (7, 3)), "logits|state h/c"),
    (perturbed(weight(1), (0, 5, 2)), "logits|state h/c"),
    (perturbed(weight(2, layer=1), (0, 20, 11)), "logits|state h/c"),
    (perturbed(weight(3), (0, 30)), "logits|state h/c"),
    (perturbed(lambda g: "model.head.bias", (4,)), "logits"),
    (swapped_gates, "logits|state h/c"),
    (dropped_biases, "logits|state h/c"),
], ids=["embedding+1e-3", "W+1e-3", "R+1e-3", "B+1e-3", "head-bias+1e-3", "gates-swapped",
        "biases-dropped"])
def test_damaged_artifact_is_refused_naming_the_check(
        tiny_run: Path, artifact_copy: Path, mutate: Mutation, check: str) -> None:
    damaged(artifact_copy, mutate)
    with pytest.raises(ParityError, match=rf"disagree: ({check}) \(batch") as refused:
        check_parity(torch_model(tiny_run), bard_sdk.load(artifact_copy, device="cpu"),
                     "ROMEO:")
    message = str(refused.value)
    assert "limit" in message and "max|reference|" in message, "the figures are given"
    assert "bug in bard's export" in message and "report it" in message


def test_the_gate_separates_rounding_from_damage_with_room_on_both_sides(
        tiny_run: Path, tiny_artifact: Path, artifact_copy: Path) -> None:
    """One bias moved by 1e-3 lands well outside the bound, the good artifact well inside."""
    model = torch_model(tiny_run)
    good = measure_parity(model, bard_sdk.load(tiny_artifact, device="cpu"), "ROMEO:")
    damaged(artifact_copy, perturbed(weight(3), (0, 30)))
    bad = measure_parity(model, bard_sdk.load(artifact_copy, device="cpu"), "ROMEO:")
    assert good.worst_fraction <= 0.2
    assert bad.worst_fraction >= 3


def test_good_models_near_the_old_absolute_bound_pass(tiny_run: Path,
                                                      tiny_artifact: Path) -> None:
    """A state of magnitude ~10 carries ~1e-5 of float32 error: relative to its magnitude."""
    state = STATE
    assert state.limit(10.0) > 1e-5 * 10 and state.limit(0.0) == state.atol
    report = check_parity(torch_model(tiny_run), bard_sdk.load(tiny_artifact, device="cpu"),
                          "ROMEO:")
    assert all(c.passed for c in report.comparisons)
    assert report.greedy_chars == parity.GREEDY_CHARS


def test_a_nan_fails_every_bound() -> None:
    comparison = parity.Comparison("state h/c", float("nan"), 1.0, Bound(1.0, 1.0))
    assert not comparison.passed
    assert LOGITS.limit(float("nan")) != LOGITS.limit(float("nan"))


def test_greedy_difference_at_a_near_tie_is_accepted(
        tiny_run: Path, tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two characters whose logits differ by less than float32 can tell apart are both right;
    a real divergence is refused."""
    model = torch_model(tiny_run)
    sdk_model = bard_sdk.load(tiny_artifact, device="cpu")
    expected, chosen_from = parity.torch_greedy(model.double(), sdk_model.encode("ROMEO:"),
                                                parity.GREEDY_CHARS)
    at = 50
    runner_up = int(np.argsort(chosen_from[at])[-2])
    forced = sdk_model.vocab.decode([*expected[:at], runner_up])

    def generate_with(gap: float):  # type: ignore[no-untyped-def]
        def fake_greedy(m, ids, count):  # type: ignore[no-untyped-def]
            logits = [x.copy() for x in chosen_from]
            logits[at][runner_up] = logits[at][expected[at]] - gap
            return expected, logits
        return fake_greedy

    monkeypatch.setattr(sdk_model, "generate", lambda *a, **k: forced)
    monkeypatch.setattr(parity, "torch_greedy", generate_with(1e-7))
    report = check_parity(model, sdk_model, "ROMEO:")
    assert report.greedy_chars == at and report.greedy_near_tie_at == at
    monkeypatch.setattr(parity, "torch_greedy", generate_with(0.5))
    with pytest.raises(ParityError, match=f"greedy generation differs .* character {at} "):
        check_parity(model, sdk_model, "ROMEO:")


def damaged_int8(scale: float) -> Callable[[Path, Path], None]:
    """quantize_int8, then every int8 weight's scale (the LSTMs' and the head's) x `scale`."""
    original = export_module.quantize_int8

    def quantize(source: Path, target: Path) -> None:
        original(source, target)
        graph = onnx.load(str(target))
        names = [t.name for t in graph.graph.initializer if t.name.endswith("_scale")]
        assert len(names) >= 5, names
        for name in names:
            edit_initializer(graph, name, lambda a: (a * scale).astype(a.dtype))
        onnx.save_model(graph, str(target))
    return quantize


def test_int8_is_held_to_its_own_bound(tiny_run: Path, tiny_artifact: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 differs from float by far more than the float gate allows, so it has its own,
    stated bound (INT8_TOLERANCE nats per character on the validation split)."""
    model = torch_model(tiny_run)
    int8 = bard_sdk.load(tiny_artifact, device="cpu", variant="int8")
    assert measure_parity(model, int8, "ROMEO:").worst_fraction > 1, "float's bound is no use"
    prov = json.loads((tiny_artifact / "manifest.json").read_text())["provenance"]
    assert prov["val_loss_nats_int8"] - prov["val_loss_nats"] <= export_module.INT8_TOLERANCE

    monkeypatch.setattr(export_module, "quantize_int8", damaged_int8(3.0))
    out = tmp_path / "art"
    with pytest.raises(QualityGateError, match=r"int8 validation loss .* worse than float"):
        export_run(ExportRequest(run_dir=tiny_run, out=out, quantize="int8"))
    assert not out.exists()
