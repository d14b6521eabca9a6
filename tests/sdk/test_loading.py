"""bard_sdk.load refuses every broken or hostile artifact with a clear ArtifactError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bard_sdk
import onnx
import pytest
from bard_sdk.schema import validate_manifest_schema

from tests.sdk.hostile import edit_manifest, rehash, widen_logits


def test_import_pulls_in_neither_torch_nor_onnx() -> None:
    code = ("import sys, bard_sdk; bad = sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'onnx', 'onnxscript')); print(bad); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_loads_and_reports_its_device(tiny_artifact: Path) -> None:
    model = bard_sdk.load(tiny_artifact, threads=1)
    assert model.device == "cpu" and model.variant == "fp32"
    assert "cpu" in repr(model)


def test_truncated_model_file(artifact_copy: Path) -> None:
    path = artifact_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(bard_sdk.ArtifactError, match="does not match its manifest"):
        bard_sdk.load(artifact_copy)


def test_altered_model_file(artifact_copy: Path) -> None:
    path = artifact_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(bard_sdk.ArtifactError, match="sha256"):
        bard_sdk.load(artifact_copy)


def test_newer_manifest_format(artifact_copy: Path) -> None:
    edit_manifest(artifact_copy, lambda m: m.update(format_version=99))
    with pytest.raises(bard_sdk.ArtifactError, match="newer"):
        bard_sdk.load(artifact_copy)


def test_manifest_schema_violation(artifact_copy: Path) -> None:
    edit_manifest(artifact_copy, lambda m: m["model"].pop("hidden_size"))
    with pytest.raises(bard_sdk.ArtifactError, match="hidden_size"):
        bard_sdk.load(artifact_copy)


def test_corrupt_manifest_json(artifact_copy: Path) -> None:
    (artifact_copy / "manifest.json").write_text("{not json")
    with pytest.raises(bard_sdk.ArtifactError, match="not valid JSON"):
        bard_sdk.load(artifact_copy)


def test_vocabulary_that_disagrees_with_the_graph(artifact_copy: Path) -> None:
    def drop_char(manifest: dict) -> None:
        manifest["vocabulary"] = manifest["vocabulary"][:-1]
        manifest["model"]["vocab_size"] -= 1
    edit_manifest(artifact_copy, drop_char)
    with pytest.raises(bard_sdk.ArtifactError, match="predicts 65 characters"):
        bard_sdk.load(artifact_copy)


def test_unexpected_graph_names(artifact_copy: Path) -> None:
    model = onnx.load(str(artifact_copy / "model.onnx"))
    model.graph.output[0].name = "scores"
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == "logits":
                node.output[i] = "scores"
    onnx.save(model, str(artifact_copy / "model.onnx"))
    rehash(artifact_copy)
    with pytest.raises(bard_sdk.ArtifactError, match="outputs"):
        bard_sdk.load(artifact_copy)


def test_external_data_is_refused(artifact_copy: Path) -> None:
    model = onnx.load(str(artifact_copy / "model.onnx"))
    onnx.save(model, str(artifact_copy / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    rehash(artifact_copy)
    with pytest.raises(bard_sdk.ArtifactError, match="external data"):
        bard_sdk.load(artifact_copy)


def test_symlinked_model_is_refused(artifact_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    os.replace(artifact_copy / "model.onnx", outside)
    os.symlink(outside, artifact_copy / "model.onnx")
    with pytest.raises(bard_sdk.ArtifactError, match="symbolic link"):
        bard_sdk.load(artifact_copy)


def test_path_outside_the_directory_is_refused(artifact_copy: Path) -> None:
    edit_manifest(artifact_copy, lambda m: m["files"]["fp32"].update(path="../model.onnx"))
    with pytest.raises(bard_sdk.ArtifactError, match=r"schema|outside"):
        bard_sdk.load(artifact_copy)


def test_missing_directory_and_variant(tiny_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(bard_sdk.ArtifactError, match="not found"):
        bard_sdk.load(tmp_path / "nothing")
    with pytest.raises(bard_sdk.ArtifactError, match="no 'fp16' model"):
        bard_sdk.load(tiny_artifact, variant="fp16")


def test_builtin_schema_checker_agrees_with_jsonschema(tiny_artifact: Path) -> None:
    import jsonschema

    schema = json.loads((Path(bard_sdk.__file__).parent / "manifest.schema.json").read_text())
    good = json.loads((tiny_artifact / "manifest.json").read_text())
    bad_cases = [
        {**good, "format_version": "1"},
        {**good, "vocabulary": ["ab"]},
        {**good, "files": {"fp32": {**good["files"]["fp32"], "sha256": "xyz"}}},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "graph"},
        {**good, "name": "x" * 201},
        {**good, "vocabulary": ["\ud800", *good["vocabulary"][1:]]},
        {**good, "files": {**good["files"], "Bad Key": good["files"]["fp32"]}},
        {**good, "graph": {**good["graph"], "inputs": [
            {"name": "tokens", "dtype": "int64", "shape": ["batch"] * 9}]}},
    ]
    assert validate_manifest_schema(good) == []
    jsonschema.validate(good, schema)
    for bad in bad_cases:
        assert validate_manifest_schema(bad), bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_a_graph_that_emits_other_shapes_than_it_declares(artifact_copy: Path) -> None:
    widen_logits(artifact_copy)
    with pytest.raises(bard_sdk.ArtifactError, match=r"emits logits float32 \[2, 2, 66\]"):
        bard_sdk.load(artifact_copy)


@pytest.mark.parametrize("name", ["manifest.json", "model.onnx"])
def test_unreadable_files(artifact_copy: Path, name: str,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = artifact_copy / name
    if os.geteuid() == 0:  # root reads anything: make the read itself fail as it would
        real = Path.read_bytes

        def denied(self: Path) -> bytes:
            if self == target:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)
        monkeypatch.setattr(Path, "read_bytes", denied)
    else:
        target.chmod(0)
    with pytest.raises(bard_sdk.ArtifactError, match=r"cannot read .*Permission denied"):
        bard_sdk.load(artifact_copy)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_manifest_that_is_not_a_file(artifact_copy: Path, kind: str) -> None:
    path = artifact_copy / "manifest.json"
    path.unlink()
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    with pytest.raises(bard_sdk.ArtifactError, match="not a regular file"):
        bard_sdk.load(artifact_copy)


def replace_in_manifest(artifact: Path, old: str, new: str) -> None:
    path = artifact / "manifest.json"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [('"format_version"', '"deep": ' + "[" * 5000 + "]" * 5000 + ', "format_version"',
      "nested more than"),
     ('"format_version"', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "format_version"',
      "nested more than"),
     ('"vocabulary": [', '"vocabulary": ["\\ud800", ', "lone surrogate"),
     ('"steps": ', '"steps": NaN, "x": ', "NaN is not a JSON number"),
     ('"format_version"', '"name": "again", "format_version"', "appears twice"),
     ('"fp32": {', '"\\u001b[31m": {"path": "a.onnx", "sha256": "' + "0" * 64
      + '", "bytes": 1}, "fp32": {', r"key '\\x1b\[31m'")],
)
def test_strict_manifest_parsing(artifact_copy: Path, old: str, new: str,
                                 message: str) -> None:
    replace_in_manifest(artifact_copy, old, new)
    with pytest.raises(bard_sdk.ArtifactError, match=message):
        bard_sdk.load(artifact_copy)


def test_surrogate_vocabulary_entry_is_refused(artifact_copy: Path) -> None:
    """A vocabulary entry must be one Unicode scalar value: a lone surrogate cannot be printed
    (it used to pass, then fail half-way through printing a generated text)."""
    path = artifact_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["vocabulary"][-1] = "\ud800"
    path.write_text(json.dumps(manifest, allow_nan=False))  # ensure_ascii writes "\ud800"
    with pytest.raises(bard_sdk.ArtifactError, match="surrogate"):
        bard_sdk.load(artifact_copy)


def test_oversized_manifest_and_long_name(artifact_copy: Path) -> None:
    edit_manifest(artifact_copy, lambda m: m.update(name="x" * 201))
    with pytest.raises(bard_sdk.ArtifactError, match=r"manifest.name: too long"):
        bard_sdk.load(artifact_copy)
    edit_manifest(artifact_copy, lambda m: m.update(name="x" * 10_000_000))
    with pytest.raises(bard_sdk.ArtifactError, match="larger than"):
        bard_sdk.load(artifact_copy)


def test_control_characters_in_the_name_are_escaped_when_shown(artifact_copy: Path) -> None:
    from bard_sdk.display import printable

    edit_manifest(artifact_copy, lambda m: m.update(name="evil\x1b]0;pwned\x07\u202etxt"))
    model = bard_sdk.load(artifact_copy)
    shown = printable(model.manifest.name)
    assert shown == "evil\\x1b]0;pwned\\x07\\u202etxt" and shown.isprintable()
    assert "\x1b" not in repr(model)
