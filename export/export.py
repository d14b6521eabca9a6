"""`bard export`: a training run's checkpoint -> a verified artifact directory.

Steps, all inside a temporary directory that is renamed into place only at the end:
export and verify the graph, write the manifest, load it back through bard_sdk, run the parity
gate, evaluate on the validation split, optionally quantise to int8 behind a quality gate, write
the model card. Any failure leaves the destination untouched.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import bard_sdk
import onnx
from bard.training.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from bard.training.data import Splits, Vocabulary, read_corpus, text_sha256
from bard.training.errors import UsageError
from bard.training.evaluate import bits_per_char, stream_nll
from bard.training.fsutil import atomic_directory, atomic_write_text
from bard_sdk.manifest import MANIFEST_FILE, build_manifest, graph_section, sha256_bytes

from .card import HeldOut, write_card
from .onnx_graph import OPSET, export_onnx
from .parity import ParityError, ParityReport, check_parity
from .preflight import (
    check_name,
    check_output_dir,
    check_readable_files,
    check_replaceable,
    output_lock,
    read_card_notes,
)
from .quantize import quantize_int8

INT8_TOLERANCE = 0.01  # nats per character
PARITY_PROMPT = "ROMEO:"


class QualityGateError(RuntimeError):
    """The int8 model lost more than INT8_TOLERANCE nats per character."""


@dataclass
class ExportRequest:
    run_dir: Path
    out: Path
    checkpoint: str = "best"
    quantize: str | None = None
    force: bool = False
    data: Path | None = None
    name: str | None = None
    heldout: list[Path] = field(default_factory=list)
    card_notes: Path | None = None
    command: str | None = None


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    parity: ParityReport


def model_file_entry(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"path": path.name, "sha256": sha256_bytes(data), "bytes": len(data)}


def export_run(request: ExportRequest) -> ExportResult:
    """Export, gate and write one artifact directory atomically. Every input and the output
    path are checked, and the output locked, before the long work starts."""
    if request.quantize not in (None, "int8"):
        raise UsageError(f"--quantize supports only int8, got {request.quantize!r}")
    notes = read_card_notes(request.card_notes)
    check_readable_files(request.heldout, "--heldout")
    target = check_output_dir(request.out, request.run_dir, request.force)
    check_name(request.name or target.name)
    with output_lock(target):
        check_output_dir(request.out, request.run_dir, request.force)  # as it is now, locked
        try:
            return _export(request, notes)
        except FileExistsError:  # something else created --out meanwhile: it is left alone
            raise UsageError(f"{request.out} appeared during the export; nothing was "
                             "replaced") from None


def _export(request: ExportRequest, notes: str) -> ExportResult:
    checkpoint = load_checkpoint(find_checkpoint(request.run_dir, request.checkpoint))
    model = model_from_checkpoint(checkpoint)
    corpus = checkpoint.state["corpus"]
    data_path = request.data or (Path(corpus["path"]) if corpus.get("path") else None)
    text, _ = read_corpus(data_path)
    if text_sha256(text) != corpus["sha256"]:
        raise UsageError("the corpus differs from the one this run was trained on; "
                         "pass the original with --data")
    vocab = Vocabulary(checkpoint.vocab)
    splits = Splits.from_tokens(vocab.encode(text), corpus["val_fraction"], 1)
    val_text = vocab.decode(splits.val)
    nll, count = stream_nll(model, [splits.val], next(model.parameters()).device)
    val_loss = nll / count

    try:
        with atomic_directory(request.out, replace=request.force,
                              check=check_replaceable) as tmp:
            graph = export_onnx(model)
            onnx.save_model(graph, str(tmp / "model.onnx"))
            files = {"fp32": model_file_entry(tmp / "model.onnx")}
            config = checkpoint.model_config
            provenance: dict[str, Any] = {
                "corpus": {"name": corpus["name"], "sha256": corpus["sha256"],
                           "length": corpus["length"]},
                "split": {"val_fraction": corpus["val_fraction"],
                          "train_chars": len(splits.train), "val_chars": len(splits.val)},
                "steps": checkpoint.step,
                "checkpoint": checkpoint.path.name,
                "val_loss_nats": val_loss,
                "val_bpc": bits_per_char(val_loss),
                "val_loss_nats_training_eval": checkpoint.state["val_loss"],
                "train_config": checkpoint.state["train_config"],
                # the parsed config, so fields an older checkpoint predates show their defaults
                "model_config": asdict(checkpoint.model_config),
            }
            fields = dict(
                name=request.name or request.out.name,
                bard_version=metadata.version("bard"),
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                vocabulary=list(checkpoint.vocab),
                model={"architecture": "char-lstm", "vocab_size": config.vocab_size,
                       "embedding_dim": config.embedding_dim, "hidden_size": config.hidden_size,
                       "num_layers": config.num_layers,
                       "parameters": sum(p.numel() for p in model.parameters())},
                graph=graph_section(config.num_layers, config.hidden_size, config.vocab_size,
                                    OPSET),
                files=files, provenance=provenance)
            write_manifest(tmp, fields)

            sdk_model = bard_sdk.load(tmp, device="cpu")
            parity = check_parity(model, sdk_model, PARITY_PROMPT)
            sdk_val = sdk_model.score(val_text).nats_per_char
            if abs(sdk_val - val_loss) > 1e-4:
                raise ParityError(f"validation loss via bard_sdk {sdk_val:.6f} differs from "
                                  f"PyTorch {val_loss:.6f}")
            if request.quantize == "int8":
                quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
                files["int8"] = model_file_entry(tmp / "model.int8.onnx")
                write_manifest(tmp, fields)
                int8_val = bard_sdk.load(tmp, device="cpu", variant="int8").score(
                    val_text).nats_per_char
                if int8_val - val_loss > INT8_TOLERANCE:
                    raise QualityGateError(
                        f"int8 validation loss {int8_val:.4f} is {int8_val - val_loss:.4f} nats "
                        f"per character worse than float ({val_loss:.4f}); limit {INT8_TOLERANCE}")
                provenance["val_loss_nats_int8"] = int8_val
                provenance["val_bpc_int8"] = bits_per_char(int8_val)
            provenance["parity"] = {"max_logits_diff": parity.max_logits_diff,
                                    "max_state_diff": parity.max_state_diff,
                                    "stepwise_max_diff": parity.stepwise_max_diff,
                                    "greedy_chars_identical": parity.greedy_chars}
            manifest = write_manifest(tmp, fields)
            heldout = [evaluate_heldout(sdk_model, path) for path in request.heldout]
            write_card(tmp, str(request.out), manifest, bard_sdk.load(tmp, device="cpu"),
                       heldout, notes, request.command)
            png = request.run_dir / "loss_curve.png"
            if png.exists():
                (tmp / "loss_curve.png").write_bytes(png.read_bytes())
    except PermissionError as err:
        raise UsageError(f"output path is not writable: {request.out} ({err})") from None
    return ExportResult(request.out, manifest, parity)


def write_manifest(directory: Path, fields: dict[str, Any]) -> dict[str, Any]:
    manifest = build_manifest(**fields)
    atomic_write_text(directory / MANIFEST_FILE, json.dumps(manifest, indent=1,
                                                            ensure_ascii=False) + "\n")
    return manifest


def evaluate_heldout(model: bard_sdk.Model, path: Path) -> HeldOut:
    """Score a held-out text; characters outside the vocabulary are skipped and counted."""
    text, _ = read_corpus(path)
    unknown = sum(1 for ch in text if ch not in model.vocab)
    score = model.score(text, on_unknown="skip")
    return HeldOut(path.name, len(text), unknown, score.nats_per_char, score.bits_per_char)
