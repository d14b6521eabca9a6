"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A run directory holds `run.json` (what the run is), `checkpoints/step-NNNNNNNN/` directories
(model.safetensors, optimizer.safetensors, state.json) and the pointers `checkpoints/last.json`
and `checkpoints/best.json`. A checkpoint directory is written under a temporary name and
renamed; a pointer is replaced atomically; so a kill at any moment leaves the previous
checkpoint whole and pointed to.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, TrainConfig
from .errors import UsageError
from .fsutil import atomic_directory, atomic_write_text
from .model import CharLSTM

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
FORMAT = "bard-run/1"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encode_bytes(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def decode_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


@dataclass
class Checkpoint:
    """What a checkpoint holds once loaded and checked."""

    path: Path
    model_config: ModelConfig
    train_config: TrainConfig
    vocab: tuple[str, ...]
    step: int
    state: dict[str, Any]
    weights: dict[str, torch.Tensor]


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    """Split an optimizer state dict into flat tensors (safetensors) and JSON-able groups."""
    state_dict = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value.detach().cpu().contiguous()
        for index, slots in state_dict["state"].items()
        for key, value in slots.items()
    }
    return tensors, state_dict["param_groups"]


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: Any
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    run_dir: Path,
    model: CharLSTM,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    *,
    pointers: tuple[str, ...],
) -> Path:
    """Write checkpoint `step-N`, move the named pointers to it, and prune unreferenced ones."""
    root = run_dir / CHECKPOINT_DIR
    name = f"step-{state['step']:08d}"
    with atomic_directory(root / name, replace=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        opt_tensors, groups = optimizer_to_tensors(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        record = {
            **state,
            "format": FORMAT,
            "model_config": dataclasses.asdict(model.config),
            "optimizer_groups": groups,
            "files": {
                "model.safetensors": file_sha256(tmp / "model.safetensors"),
                "optimizer.safetensors": file_sha256(tmp / "optimizer.safetensors"),
            },
        }
        atomic_write_text(tmp / "state.json", json.dumps(record, indent=1))
    for pointer in pointers:
        atomic_write_text(root / f"{pointer}.json", json.dumps({"checkpoint": name}) + "\n")
    prune_checkpoints(root)
    return root / name


def prune_checkpoints(root: Path) -> None:
    keep = {read_pointer(root, p) for p in ("last", "best") if (root / f"{p}.json").exists()}
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith("step-") and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


def read_pointer(root: Path, pointer: str) -> str:
    try:
        return str(json.loads((root / f"{pointer}.json").read_text())["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"cannot read checkpoint pointer {root / pointer}.json: {err}") from None


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """Resolve `best` (falling back to `last`) or `last` to a checkpoint directory."""
    if not run_dir.is_dir():
        raise UsageError(f"run directory not found: {run_dir}")
    root = run_dir / CHECKPOINT_DIR
    order = ("best", "last") if which == "best" else (which,)
    for pointer in order:
        if (root / f"{pointer}.json").exists():
            return root / read_pointer(root, pointer)
    raise UsageError(f"no checkpoint in {run_dir} (expected {root}/last.json)")


def load_checkpoint(path: Path) -> Checkpoint:
    """Load and verify a checkpoint directory; every failure is a one-line UsageError."""
    state_file = path / "state.json"
    if not state_file.is_file():
        raise UsageError(f"checkpoint is missing state.json: {path}")
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UsageError(f"checkpoint state.json is corrupt: {state_file} ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UsageError(f"not a bard checkpoint (format {FORMAT!r} expected): {state_file}")
    for filename, expected in state["files"].items():
        file = path / filename
        if not file.is_file():
            raise UsageError(f"checkpoint file missing: {file}")
        if file_sha256(file) != expected:
            raise UsageError(f"checkpoint file is corrupt (sha256 mismatch): {file}")
    try:
        weights = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError) as err:
        raise UsageError(f"cannot read weights {path / 'model.safetensors'}: {err}") from None
    try:
        model_config = ModelConfig(**state["model_config"])
        train_config = TrainConfig(**state["train_config"])
    except TypeError as err:
        raise UsageError(f"checkpoint config is invalid: {state_file} ({err})") from None
    check_weights_match(model_config, weights, path)
    vocab = tuple(state["vocab"])
    if len(vocab) != model_config.vocab_size:
        raise UsageError(
            f"checkpoint vocabulary has {len(vocab)} characters but the config says "
            f"{model_config.vocab_size}: {state_file}"
        )
    return Checkpoint(path, model_config, train_config, vocab, int(state["step"]), state, weights)


def check_weights_match(config: ModelConfig, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Refuse weights whose names or shapes disagree with the config they came with."""
    expected = {k: tuple(v.shape) for k, v in CharLSTM(config).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    if expected.keys() != found.keys():
        diff = sorted(expected.keys() ^ found.keys())
        raise UsageError(f"checkpoint weights and config disagree at {where}: tensors {diff}")
    for key, shape in expected.items():
        if found[key] != shape:
            raise UsageError(
                f"checkpoint weights and config disagree at {where}: {key} is "
                f"{list(found[key])}, config implies {list(shape)}"
            )


def load_optimizer_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / "optimizer.safetensors"))
    except (SafetensorError, OSError) as err:
        raise UsageError(f"cannot read optimizer state in {path}: {err}") from None


def model_from_checkpoint(checkpoint: Checkpoint) -> CharLSTM:
    model = CharLSTM(checkpoint.model_config)
    model.load_state_dict(checkpoint.weights)
    model.eval()
    return model
