"""The artifact contract: `manifest.json` beside `model.onnx`, read and checked in one place.

The exporter writes manifests through `build_manifest` and the SDK reads them through
`read_manifest`, so both halves agree on one definition.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .schema import validate_manifest_schema

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
PADDING_ID = -1
INPUT_NAMES = ("tokens", "h0", "c0")
OUTPUT_NAMES = ("logits", "hn", "cn")


@dataclass(frozen=True)
class ModelFile:
    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: the vocabulary, the sizes and the files of one artifact."""

    raw: dict[str, Any]
    directory: Path

    @property
    def vocabulary(self) -> list[str]:
        return list(self.raw["vocabulary"])

    @property
    def num_layers(self) -> int:
        return int(self.raw["model"]["num_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.raw["model"]["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.raw["model"]["vocab_size"])

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.raw["provenance"])

    def variants(self) -> list[str]:
        return list(self.raw["files"])

    def file(self, variant: str) -> ModelFile:
        files = self.raw["files"]
        if variant not in files:
            raise ArtifactError(
                f"artifact {self.directory} has no {variant!r} model (it has {', '.join(files)})"
            )
        return ModelFile(**files[variant])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_spec(name: str, dtype: str, shape: list[str | int]) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def graph_section(num_layers: int, hidden_size: int, vocab_size: int, opset: int) -> dict[str, Any]:
    """The graph contract: names, dtypes and shapes of every input and output."""
    state = [num_layers, "batch", hidden_size]
    return {
        "opset": opset,
        "padding_id": PADDING_ID,
        "inputs": [tensor_spec("tokens", "int64", ["batch", "time"]),
                   tensor_spec("h0", "float32", state), tensor_spec("c0", "float32", state)],
        "outputs": [tensor_spec("logits", "float32", ["batch", "time", vocab_size]),
                    tensor_spec("hn", "float32", state), tensor_spec("cn", "float32", state)],
    }


def build_manifest(**fields: Any) -> dict[str, Any]:
    """Assemble and validate a manifest (used by the exporter); raises on a schema error."""
    manifest = {"format_version": FORMAT_VERSION, **fields}
    problems = validate_manifest_schema(manifest)
    if problems:
        raise ArtifactError("manifest does not match its schema: " + "; ".join(problems[:5]))
    return manifest


def inside(directory: Path, name: str) -> Path:
    """Resolve a file of the artifact, refusing links and anything outside the directory."""
    path = directory / name
    if path.is_symlink():
        raise ArtifactError(f"refusing symbolic link in artifact: {path}")
    resolved = path.resolve()
    if resolved.parent != directory.resolve():
        raise ArtifactError(f"artifact file reaches outside its directory: {path}")
    if not resolved.is_file():
        raise ArtifactError(f"artifact file missing: {path}")
    return resolved


def read_manifest(directory: Path) -> Manifest:
    """Read, schema-check and version-check `manifest.json` of an artifact directory."""
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory not found: {directory}")
    path = inside(directory, MANIFEST_FILE)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ArtifactError(f"manifest is not valid JSON: {path} ({err})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"manifest is not a JSON object: {path}")
    version = raw.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"manifest format {version} is newer than this bard_sdk understands "
            f"({FORMAT_VERSION}); upgrade bard: {path}"
        )
    problems = validate_manifest_schema(raw)
    if problems:
        raise ArtifactError(f"manifest does not match its schema ({path}): "
                            + "; ".join(problems[:5]))
    manifest = Manifest(raw=raw, directory=directory)
    check_consistency(manifest)
    return manifest


def check_consistency(manifest: Manifest) -> None:
    raw = manifest.raw
    if len(raw["vocabulary"]) != manifest.vocab_size:
        raise ArtifactError(
            f"manifest vocabulary has {len(raw['vocabulary'])} characters but model.vocab_size "
            f"is {manifest.vocab_size}"
        )
    if len(set(raw["vocabulary"])) != len(raw["vocabulary"]):
        raise ArtifactError("manifest vocabulary has repeated characters")
    names_in = tuple(t["name"] for t in raw["graph"]["inputs"])
    names_out = tuple(t["name"] for t in raw["graph"]["outputs"])
    if names_in != INPUT_NAMES or names_out != OUTPUT_NAMES:
        raise ArtifactError(
            f"manifest graph names {names_in} -> {names_out} are not the expected "
            f"{INPUT_NAMES} -> {OUTPUT_NAMES}"
        )


def read_model_bytes(manifest: Manifest, variant: str) -> bytes:
    """The model file's bytes, after checking its size and sha256 against the manifest."""
    entry = manifest.file(variant)
    path = inside(manifest.directory, entry.path)
    data = path.read_bytes()
    if len(data) != entry.bytes or sha256_bytes(data) != entry.sha256:
        raise ArtifactError(
            f"model file does not match its manifest (size or sha256 differ; truncated or "
            f"altered?): {path}"
        )
    return data
