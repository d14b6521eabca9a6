"""The exported artifact: graph contract, parity with PyTorch, manifest, int8, atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bard_sdk
import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from bard.export import export as export_module
from bard.export.export import ExportRequest, export_run
from bard.export.parity import SHAPES, ParityError, check_parity
from bard.training.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from bard.training.data import eval_spans
from bard.training.errors import UsageError

from tests.conftest import ROOT, bard_cli


def manifest_of(artifact: Path) -> dict:
    return json.loads((artifact / "manifest.json").read_text())


def test_graph_contract(tiny_artifact: Path) -> None:
    model = onnx.load(str(tiny_artifact / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert max(o.version for o in model.opset_import) >= 17
    lstms = [n for n in model.graph.node if n.op_type == "LSTM"]
    assert len(lstms) == 2, "one fused LSTM node per layer"
    initializers = {t.name for t in model.graph.initializer}
    for node in lstms:
        assert set(node.input[1:4]) <= initializers, "W, R, B are plain initializers"
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)

    def dims(value: onnx.ValueInfoProto) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    shapes = {v.name: dims(v) for v in list(model.graph.input) + list(model.graph.output)}
    assert shapes == {"tokens": ["batch", "time"], "h0": [2, "batch", 48],
                      "c0": [2, "batch", 48], "logits": ["batch", "time", 65],
                      "hn": [2, "batch", 48], "cn": [2, "batch", 48]}


def test_bare_onnxruntime_session_takes_any_time_length(
        tiny_artifact: Path, capfd: pytest.CaptureFixture[str]) -> None:
    options = ort.SessionOptions()
    options.log_severity_level = 1  # show warnings (and info) if onnxruntime has any
    session = ort.InferenceSession(str(tiny_artifact / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    capfd.readouterr()
    for batch, time in ((1, 3), (4, 41), (2, 333)):
        tokens = np.random.default_rng(0).integers(0, 65, (batch, time))
        state = np.zeros((2, batch, 48), np.float32)
        logits, hn, cn = session.run(None, {"tokens": tokens, "h0": state, "c0": state})
        assert logits.shape == (batch, time, 65)
        assert hn.shape == cn.shape == (2, batch, 48)
    captured = capfd.readouterr()
    assert "W:" not in captured.err and "warning" not in captured.err.lower()


def test_parity_with_pytorch(tiny_run: Path, tiny_artifact: Path) -> None:
    model = model_from_checkpoint(load_checkpoint(find_checkpoint(tiny_run)))
    report = check_parity(model, bard_sdk.load(tiny_artifact, device="cpu"), "ROMEO:", seed=5)
    assert len(report.details) == len(SHAPES) == 6
    assert len(report.comparisons) == 2 * len(SHAPES) + 1
    assert all(c.diff <= c.limit for c in report.comparisons)
    assert 0 < report.max_logits_diff <= 1e-4 and report.max_state_diff <= 1e-4
    assert report.greedy_chars == 200 and report.greedy_near_tie_at is None


def test_parity_gate_catches_a_wrong_model(tiny_run: Path, tiny_artifact: Path) -> None:
    import torch

    model = model_from_checkpoint(load_checkpoint(find_checkpoint(tiny_run)))
    with torch.no_grad():
        model.head.bias.add_(1e-3)
    with pytest.raises(ParityError, match="logits"):
        check_parity(model, bard_sdk.load(tiny_artifact, device="cpu"), "ROMEO:")


def test_manifest_matches_published_schema_and_files(tiny_artifact: Path) -> None:
    manifest = manifest_of(tiny_artifact)
    schema = json.loads((ROOT / "sdk" / "manifest.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(manifest, schema)
    assert manifest["format_version"] == bard_sdk.FORMAT_VERSION
    assert len(manifest["vocabulary"]) == manifest["model"]["vocab_size"] == 65
    assert set(manifest["files"]) == {"fp32", "int8"}
    for entry in manifest["files"].values():
        data = (tiny_artifact / entry["path"]).read_bytes()
        assert len(data) == entry["bytes"]
        import hashlib
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    prov = manifest["provenance"]
    assert prov["split"]["val_fraction"] == 0.1
    assert prov["split"]["train_chars"] == 1_003_854
    assert prov["steps"] == 60
    assert prov["val_bpc"] == pytest.approx(prov["val_loss_nats"] / np.log(2))
    card = (tiny_artifact / "README.md").read_text()
    assert card.count("temperature") >= 3
    assert "dropout 0.1, recurrent weight drop 0.0, weight decay 0.1; seed 1337" in card
    assert prov["model_config"]["hidden_size"] == 48


def test_int8_variant_runs_and_stays_close(tiny_artifact: Path) -> None:
    model = onnx.load(str(tiny_artifact / "model.int8.onnx"))
    assert any(n.op_type == "DynamicQuantizeLSTM" for n in model.graph.node)
    prov = manifest_of(tiny_artifact)["provenance"]
    assert abs(prov["val_loss_nats_int8"] - prov["val_loss_nats"]) <= 0.01
    int8 = bard_sdk.load(tiny_artifact, variant="int8")
    assert len(int8.generate("ROMEO:", 50, seed=1)) == 50


def test_recorded_validation_loss_is_reproduced_by_the_sdk(tiny_artifact: Path) -> None:
    """The recorded figure: the whole split in the run's 4 streams, each from the zero state."""
    text = (ROOT / "training" / "corpus" / "tinyshakespeare.txt.gz").read_bytes()
    import gzip
    corpus = gzip.decompress(text).decode()
    val = corpus[int(len(corpus) * 0.9):]
    prov = manifest_of(tiny_artifact)["provenance"]
    assert prov["val_streams"] == 4 and prov["sdk_check"]["chars"] == len(val)
    model = bard_sdk.load(tiny_artifact)
    scores = [model.score(val[a:b]) for a, b in eval_spans(len(val), 4)]
    nats = sum(s.total_nats for s in scores) / sum(s.characters for s in scores)
    assert nats == pytest.approx(prov["val_loss_nats"], abs=1e-4)
    assert prov["prompt"] == "GREMIO:", "the first line of the validation split"
    assert "'GREMIO:'" in (tiny_artifact / "README.md").read_text()


def test_parity_gate_fails_on_nan_instead_of_passing(tiny_run: Path,
                                                     tiny_artifact: Path) -> None:
    import torch

    model = model_from_checkpoint(load_checkpoint(find_checkpoint(tiny_run)))
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(ParityError, match="nan"):
        check_parity(model, bard_sdk.load(tiny_artifact, device="cpu"), "ROMEO:")


def nan_weights_run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the run whose best checkpoint holds a NaN weight (its sha256 updated)."""
    import hashlib

    import torch
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    checkpoint = find_checkpoint(run)
    weights = load_file(str(checkpoint / "model.safetensors"))
    weights["head.bias"][0] = float("nan")
    save_file(weights, str(checkpoint / "model.safetensors"))
    state = json.loads((checkpoint / "state.json").read_text())
    state["files"]["model.safetensors"] = hashlib.sha256(
        (checkpoint / "model.safetensors").read_bytes()).hexdigest()
    (checkpoint / "state.json").write_text(json.dumps(state))
    assert not torch.isfinite(weights["head.bias"]).all()
    return run


def test_non_finite_weights_are_refused_with_exit_1(tiny_run: Path, tmp_path: Path) -> None:
    run = nan_weights_run(tiny_run, tmp_path)
    result = bard_cli("export", str(run), "--out", str(tmp_path / "art"))
    assert result.returncode == 1, result.stderr
    assert "export refused, nothing written" in result.stderr and "head.bias" in result.stderr
    assert not (tmp_path / "art").exists()


def test_non_finite_validation_loss_is_refused(tiny_run: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "mean_nll", lambda *args: float("nan"))
    with pytest.raises(export_module.QualityGateError, match="not finite"):
        export_run(ExportRequest(run_dir=tiny_run, out=tmp_path / "art"))
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_never_holds_nan(tiny_artifact: Path, tmp_path: Path) -> None:
    raw = manifest_of(tiny_artifact)
    fields = {k: v for k, v in raw.items() if k != "format_version"}
    fields["provenance"] = {**raw["provenance"], "val_loss_nats": float("nan")}
    with pytest.raises(export_module.QualityGateError, match="non-finite"):
        export_module.write_manifest(tmp_path, fields)
    assert not (tmp_path / "manifest.json").exists()


def test_existing_output_is_refused_without_force(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    with pytest.raises(UsageError, match="not a bard artifact"):
        export_run(ExportRequest(run_dir=tiny_run, out=out, force=True))
    assert (out / "keep.txt").read_text() == "keep"


def test_failed_gate_writes_nothing(tiny_run: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise ParityError("forced failure")

    monkeypatch.setattr(export_module, "check_parity", failing)
    out = tmp_path / "art"
    with pytest.raises(ParityError):
        export_run(ExportRequest(run_dir=tiny_run, out=out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary directory left behind"


def test_run_without_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(UsageError, match="no checkpoint"):
        export_run(ExportRequest(run_dir=tmp_path / "run", out=tmp_path / "art"))


def test_corrupt_safetensors_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = find_checkpoint(run) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UsageError, match="corrupt"):
        export_run(ExportRequest(run_dir=run, out=tmp_path / "art"))
    assert not (tmp_path / "art").exists()


def test_config_and_weights_that_disagree_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state_file = find_checkpoint(run) / "state.json"
    state = json.loads(state_file.read_text())
    state["model_config"]["hidden_size"] = 64
    state_file.write_text(json.dumps(state))
    with pytest.raises(UsageError, match="disagree"):
        export_run(ExportRequest(run_dir=run, out=tmp_path / "art"))
