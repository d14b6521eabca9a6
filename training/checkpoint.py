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
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bard_sdk.digest import sha256_file
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, TrainConfig
from .errors import UsageError
from .fsutil import atomic_directory, atomic_write_text
from .model import CharLSTM
from .records import Fields, dataclass_from_json, dumps, read_json
from .rundir import CorpusRecord
from .schedule import Schedule

CHECKPOINT_DIR = "checkpoints"
FORMAT = "bard-run/1"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors")
# With a weight average (--ema-decay), model.safetensors holds the average (what evaluation
# and export use) and the weights being trained travel beside the optimizer's moments, under
# this prefix: together they are what resuming needs.
TRAINING_WEIGHTS = "training_weights."


file_sha256 = sha256_file  # the SDK's one sha256 helper, under the name checkpoints use


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
    corpus: CorpusRecord


@dataclass(frozen=True)
class TrainingState:
    """What a checkpoint's state.json records about the run at its step, besides the files:
    training writes it (`save_checkpoint`), `resume_state` reads what resuming needs back and
    export reads the losses and configs. Losses are None until an evaluation has run."""

    step: int
    vocab: tuple[str, ...]
    rank_weight_checksums: list[float]
    train_config: TrainConfig
    corpus: CorpusRecord
    val_loss: float | None
    best_val_loss: float | None
    evals_since_best: int
    rng: list[dict[str, str]]
    world_size: int
    parameters: int
    schedule: Schedule
    pending_eval: bool
    eval_chars: int
    lineage: dict[str, Any] | None = None  # a fine-tuned run's parent (finetune.Lineage)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "vocab": list(self.vocab),
                "rank_weight_checksums": self.rank_weight_checksums,
                "train_config": dataclasses.asdict(self.train_config),
                "corpus": dataclasses.asdict(self.corpus), "val_loss": self.val_loss,
                "best_val_loss": self.best_val_loss, "evals_since_best": self.evals_since_best,
                "rng": self.rng, "world_size": self.world_size, "parameters": self.parameters,
                "schedule": dataclasses.asdict(self.schedule),
                "pending_eval": self.pending_eval, "eval_chars": self.eval_chars,
                **({} if self.lineage is None else {"lineage": self.lineage})}


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
    state: TrainingState,
    *,
    pointers: tuple[str, ...],
    averaged: CharLSTM | None = None,
) -> Path:
    """Write checkpoint `step-N`, move the named pointers to it, and prune unreferenced ones.
    With `averaged`, its weights are the checkpoint's model and `model`'s are kept for resume."""
    root = run_dir / CHECKPOINT_DIR
    name = f"step-{state.step:08d}"
    with atomic_directory(root / name, replace=True) as tmp:
        shown = averaged if averaged is not None else model
        save_file(cpu_tensors(shown.state_dict()), str(tmp / "model.safetensors"))
        opt_tensors, groups = optimizer_to_tensors(optimizer)
        if averaged is not None:
            opt_tensors.update({TRAINING_WEIGHTS + k: v
                                for k, v in cpu_tensors(model.state_dict()).items()})
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        record = {
            **state.to_json(),
            "format": FORMAT,
            "model_config": dataclasses.asdict(model.config),
            "optimizer_groups": groups,
            "files": {
                "model.safetensors": file_sha256(tmp / "model.safetensors"),
                "optimizer.safetensors": file_sha256(tmp / "optimizer.safetensors"),
            },
        }
        atomic_write_text(tmp / "state.json", dumps(record, indent=1, ensure_ascii=False))
    for pointer in pointers:
        atomic_write_text(root / f"{pointer}.json", dumps({"checkpoint": name}) + "\n")
    prune_checkpoints(root)
    return root / name


def cpu_tensors(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in weights.items()}


def split_training_weights(tensors: dict[str, torch.Tensor]
                           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """The optimizer's tensors and, when the run averages its weights, the training weights."""
    raw = {k[len(TRAINING_WEIGHTS):]: v for k, v in tensors.items()
           if k.startswith(TRAINING_WEIGHTS)}
    rest = {k: v for k, v in tensors.items() if not k.startswith(TRAINING_WEIGHTS)}
    return rest, raw or None


def prune_checkpoints(root: Path) -> None:
    keep = {read_pointer(root, p) for p in ("last", "best") if (root / f"{p}.json").exists()}
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith("step-") and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


def read_pointer(root: Path, pointer: str) -> str:
    path = root / f"{pointer}.json"
    name = Fields(read_json(path), str(path)).string("checkpoint")
    if not re.fullmatch(r"step-\d{8,}", name or ""):
        raise UsageError(f"{path}: field 'checkpoint' must name a step-NNNNNNNN directory, "
                         f"got {name!r}")
    return str(name)


def update_state(checkpoint_dir: Path, **fields: Any) -> None:
    """Add fields to a written checkpoint's state.json (the final whole-split score)."""
    state_file = checkpoint_dir / "state.json"
    state = Fields(read_json(state_file), str(state_file)).record
    atomic_write_text(state_file, dumps({**state, **fields}, indent=1, ensure_ascii=False))


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
    """Load and verify a checkpoint directory; every failure is a one-line UsageError that
    names the file (and the field)."""
    state_file = path / "state.json"
    if not state_file.is_file():
        raise UsageError(f"checkpoint is missing state.json: {path}")
    fields = Fields(read_json(state_file), str(state_file))
    if fields.record.get("format") != FORMAT:
        raise UsageError(f"not a bard checkpoint (format {FORMAT!r} expected): {state_file}")
    files = fields.obj("files")
    if set(files.record) != set(CHECKPOINT_FILES) or not all(
            isinstance(v, str) for v in files.record.values()):
        raise fields.bad("files", "an object giving the sha256 of "
                                  + " and ".join(CHECKPOINT_FILES))
    step = fields.integer("step", 0)
    vocab = parse_vocab(fields)
    model_config = dataclass_from_json(ModelConfig, fields.get("model_config"),
                                       f"{state_file} model_config")
    train_config = dataclass_from_json(TrainConfig, fields.get("train_config"),
                                       f"{state_file} train_config")
    corpus = dataclass_from_json(CorpusRecord, fields.get("corpus"), f"{state_file} corpus")
    if len(vocab) != model_config.vocab_size:
        raise UsageError(
            f"checkpoint vocabulary has {len(vocab)} characters but the config says "
            f"{model_config.vocab_size}: {state_file}"
        )
    for filename, expected in files.record.items():
        file = path / filename
        if not file.is_file():
            raise UsageError(f"checkpoint file missing: {file}")
        if file_sha256(file) != expected:
            raise UsageError(f"checkpoint file is corrupt (sha256 mismatch): {file}")
    try:
        weights = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError) as err:
        raise UsageError(f"cannot read weights {path / 'model.safetensors'}: {err}") from None
    check_weights_match(model_config, weights, path)
    return Checkpoint(path, model_config, train_config, vocab, step, fields.record, weights,
                      corpus)


def parse_vocab(fields: Fields) -> tuple[str, ...]:
    chars = fields.array("vocab")
    if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars) \
            or len(set(chars)) != len(chars):
        raise fields.bad("vocab", "a list of distinct single characters")
    return tuple(chars)


@dataclass(frozen=True)
class ResumeState:
    """What only resuming needs from a checkpoint (export ignores it)."""

    best_val_loss: float
    val_loss: float
    evals_since_best: int
    rng: list[dict[str, str]]
    optimizer_groups: list[dict[str, Any]]
    schedule: Schedule
    pending_eval: bool


def resume_state(checkpoint: Checkpoint) -> ResumeState:
    fields = Fields(checkpoint.state, str(checkpoint.path / "state.json"))
    best = fields.number("best_val_loss", optional=True)
    last = fields.number("val_loss", optional=True)
    groups = fields.array("optimizer_groups")
    if not groups or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                             for g in groups):
        raise fields.bad("optimizer_groups", "a list of parameter groups")
    schedule = (dataclass_from_json(Schedule, fields.get("schedule"), f"{fields.where} schedule")
                if "schedule" in fields.record else Schedule.from_config(checkpoint.train_config))
    return ResumeState(
        best_val_loss=math.inf if best is None else best,
        val_loss=math.inf if last is None else last,
        evals_since_best=fields.integer("evals_since_best", 0),
        rng=parse_rng(fields), optimizer_groups=groups, schedule=schedule,
        pending_eval=fields.boolean("pending_eval", default=False))


def parse_rng(fields: Fields) -> list[dict[str, str]]:
    """Every rank's RNG states, checked to be the right size for this PyTorch."""
    sizes = {"torch": torch.get_rng_state().numel(),
             "sampler": torch.Generator().get_state().numel()}
    entries = fields.array("rng")
    if not entries:
        raise fields.bad("rng", "one RNG state per process")
    for entry in entries:
        if not isinstance(entry, dict) or not set(sizes) <= set(entry):
            raise fields.bad("rng", "one object of RNG states per process")
        for key, size in sizes.items():
            try:
                ok = len(base64.b64decode(entry[key], validate=True)) == size
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise fields.bad("rng", f"RNG states of this PyTorch ({key} is damaged)")
    return entries


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
