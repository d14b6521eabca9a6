"""The artifact contract: `manifest.json` beside `model.onnx`, read and checked in one place.

The exporter writes manifests through `build_manifest` and the SDK reads them through
`read_manifest`, so both halves agree on one definition.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import contract
from .chat_template import ChatTemplate, template_of
from .contract import INPUT_NAMES, OUTPUT_NAMES, PADDING_ID
from .digest import sha256_bytes
from .display import printable
from .errors import ArtifactError
from .schema import validate_manifest_schema

# 2 added the optional `chat_template`: an SDK that knows only 1 would refuse the new key, so
# it is told to upgrade instead. Version 1 manifests (the shipped model's) read as before.
FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
# A manifest is a few kilobytes; these bounds keep a hostile one from costing more than that.
MAX_MANIFEST_BYTES = 8 * 2**20
MAX_JSON_DEPTH = 32
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


@dataclass(frozen=True)
class ModelFile:
    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelSizes:
    """The manifest's `model` section: what the graph was built with."""

    architecture: str  # "char-lstm"
    vocab_size: int
    embedding_dim: int
    hidden_size: int
    num_layers: int
    parameters: int


@dataclass
class ManifestContent:
    """A manifest as the exporter fills it in (files and provenance grow as the export's
    gates pass); `to_json` adds the format version and the graph section from the contract
    and checks the schema. `Manifest.content` reads one back."""

    name: str
    bard_version: str
    created: str
    vocabulary: list[str]
    model: ModelSizes
    opset: int
    files: dict[str, ModelFile]
    provenance: dict[str, Any]
    chat_template: ChatTemplate | None = None  # None: none written (readers use the default)

    def to_json(self) -> dict[str, Any]:
        model = self.model
        optional = {} if self.chat_template is None else {
            "chat_template": self.chat_template.to_json()}
        return build_manifest(
            name=self.name, bard_version=self.bard_version, created=self.created,
            vocabulary=list(self.vocabulary), model=dataclasses.asdict(model),
            graph=graph_section(model.num_layers, model.hidden_size, model.vocab_size,
                                self.opset),
            files={k: dataclasses.asdict(v) for k, v in self.files.items()},
            provenance=self.provenance, **optional)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ManifestContent:
        """From a manifest's JSON (checked already, or checked again by `to_json`)."""
        return cls(raw["name"], raw["bard_version"], raw["created"], list(raw["vocabulary"]),
                   ModelSizes(**raw["model"]), int(raw["graph"]["opset"]),
                   {k: ModelFile(**v) for k, v in raw["files"].items()},
                   dict(raw["provenance"]),
                   None if raw.get("chat_template") is None
                   else ChatTemplate.from_json(raw["chat_template"]))


@dataclass(frozen=True)
class ParentModel:
    """The model an artifact was fine-tuned from (`provenance.parent`): ids below
    `vocab_size` are the parent's characters, `added_characters` follow them in id order."""

    name: str
    kind: str  # "artifact" | "run"
    sha256: str  # of the parent's weights file (its model.onnx, or a checkpoint's safetensors)
    vocab_size: int
    added_characters: tuple[str, ...]


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
    def sizes(self) -> ModelSizes:
        return ModelSizes(**self.raw["model"])

    @property
    def content(self) -> ManifestContent:
        """The typed manifest, as the exporter built it."""
        return ManifestContent.from_json(self.raw)

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.raw["provenance"])

    @property
    def parent(self) -> ParentModel | None:
        """Where a fine-tuned model came from; None for one trained from scratch."""
        record = self.raw["provenance"].get("parent")
        if record is None:
            return None
        return ParentModel(record["name"], record["kind"], record["sha256"],
                           record["vocab_size"], tuple(record["added_characters"]))

    @property
    def chat_template(self) -> ChatTemplate:
        """How a conversation becomes a prompt (sdk/chat_template.py): the manifest's
        `chat_template`, or the default play script for an artifact that carries none."""
        return template_of(self.raw)

    def variants(self) -> list[str]:
        return list(self.raw["files"])

    def file(self, variant: str) -> ModelFile:
        files = self.raw["files"]
        if variant not in files:
            raise ArtifactError(
                f"artifact {self.directory} has no {variant!r} model (it has {', '.join(files)})"
            )
        return ModelFile(**files[variant])


def tensor_spec(name: str, dtype: str, shape: list[str | int]) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def graph_section(num_layers: int, hidden_size: int, vocab_size: int, opset: int) -> dict[str, Any]:
    """The graph contract: names, dtypes and shapes of every input and output."""
    state: list[str | int] = list(contract.state_shape(num_layers, 0, hidden_size))
    state[1] = "batch"
    return {
        "opset": opset,
        "padding_id": PADDING_ID,
        "inputs": [tensor_spec(contract.TOKENS, contract.TOKENS_DTYPE, ["batch", "time"]),
                   tensor_spec(contract.H0, contract.STATE_DTYPE, state),
                   tensor_spec(contract.C0, contract.STATE_DTYPE, state)],
        "outputs": [tensor_spec(contract.LOGITS, contract.LOGITS_DTYPE,
                                ["batch", "time", vocab_size]),
                    tensor_spec(contract.HN, contract.STATE_DTYPE, state),
                    tensor_spec(contract.CN, contract.STATE_DTYPE, state)],
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
    try:
        if path.is_symlink():
            raise ArtifactError(f"refusing symbolic link in artifact: {path}")
        resolved = path.resolve()
        if resolved.parent != directory.resolve():
            raise ArtifactError(f"artifact file reaches outside its directory: {path}")
        if not resolved.exists():
            raise ArtifactError(f"artifact file missing: {path}")
        if not resolved.is_file():
            raise ArtifactError(f"artifact file is not a regular file: {path}")
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ArtifactError(f"cannot read artifact file {path}: {err}") from None
    return resolved


def read_artifact_bytes(path: Path, expected: int | None = None, limit: int | None = None
                        ) -> bytes:
    """A file of the artifact; its size is checked before it is read."""
    try:
        size = path.stat().st_size
        if expected is not None and size != expected:
            raise ArtifactError(
                f"model file does not match its manifest (size or sha256 differ; truncated or "
                f"altered?): {path}")
        if limit is not None and size > limit:
            raise ArtifactError(f"{path.name} is larger than {limit} bytes: {path}")
        return path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"cannot read {path}: {err.strerror or err}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {printable(key, 60)!r} appears twice in one object")
        result[key] = value
    return result


def parse_strict_json(text: str, limit_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON as an unambiguous document: no NaN/Infinity, no repeated keys, no lone surrogates,
    nesting at most `limit_depth` deep (checked before the recursive parser runs)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit_depth:
                raise ValueError(f"nested more than {limit_depth} levels deep")
        elif token in "]}":
            depth -= 1
    value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate (not a Unicode character)") from None
    return value


def read_manifest(directory: Path) -> Manifest:
    """Read, schema-check and version-check `manifest.json` of an artifact directory."""
    try:
        is_dir = directory.is_dir()
    except OSError as err:
        raise ArtifactError(f"cannot read artifact directory {directory}: {err}") from None
    if not is_dir:
        raise ArtifactError(f"artifact directory not found: {directory}")
    path = inside(directory, MANIFEST_FILE)
    data = read_artifact_bytes(path, limit=MAX_MANIFEST_BYTES)
    try:
        raw = parse_strict_json(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ArtifactError(f"manifest is not UTF-8: {path} (byte offset {err.start})") from None
    except ValueError as err:
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
    parent = raw["provenance"].get("parent")
    if parent is not None and (parent["vocab_size"] + len(parent["added_characters"])
                               != manifest.vocab_size
                               or raw["vocabulary"][parent["vocab_size"]:]
                               != parent["added_characters"]):
        raise ArtifactError("manifest provenance.parent does not match the vocabulary (its "
                            "added characters must be the ids from parent.vocab_size on)")
    template_of(raw)  # its placeholders: what the schema cannot check
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
    data = read_artifact_bytes(path, expected=entry.bytes)
    if len(data) != entry.bytes or sha256_bytes(data) != entry.sha256:
        raise ArtifactError(
            f"model file does not match its manifest (size or sha256 differ; truncated or "
            f"altered?): {path}"
        )
    return data
