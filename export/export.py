"""`bard export`: a training run's checkpoint -> a verified artifact directory.

Steps, all inside a temporary directory that is renamed into place only at the end:
export and verify the graph, write the manifest, load it back through bard_sdk, run the parity
gate, evaluate on the validation split, optionally quantise to int8 behind a quality gate, write
the model card. Any failure leaves the destination untouched, and a non-finite number (weights,
validation loss, parity figure) is a refusal, never a manifest.

The validation split comes from the run's token file (no re-encoding); the recorded loss covers
the whole split, cut into the run's evaluation streams (the trainer's definition), and the
prompts of the parity gate and the card come from the split itself, so any vocabulary works.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import bard_sdk
import numpy as np
import onnx
import torch
from bard.training.checkpoint import (
    Checkpoint,
    find_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
)
from bard.training.corpus import CorpusSource, prepare_tokens, read_text
from bard.training.data import eval_spans, split_point
from bard.training.errors import UsageError
from bard.training.evaluate import bits_per_char, stream_nll
from bard.training.fsutil import atomic_directory, atomic_write_text
from bard.training.lineage import Lineage
from bard.training.model import CharLSTM
from bard_sdk import ChatTemplate
from bard_sdk.digest import sha256_bytes
from bard_sdk.manifest import MANIFEST_FILE, ManifestContent, ModelFile, ModelSizes
from bard_sdk.vocab import Vocabulary, code_points

from .card import HeldOut, write_card
from .chat_template import chat_template_for, read_chat_template
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
from .prompt import SOURCE_CHARS, corpus_prompt
from .quantize import quantize_int8

INT8_TOLERANCE = 0.01  # nats per character
# bard_sdk scores (float32 and int8) cover at most this many validation characters: every
# stream of the split, or evenly spaced windows of it on a big corpus.
SDK_CHECK_CHARS = 1_000_000


class QualityGateError(RuntimeError):
    """A quality gate refused the model: non-finite weights or validation loss, or an int8
    model that lost more than INT8_TOLERANCE nats per character."""


@dataclass
class ExportRequest:
    run_dir: Path
    out: Path
    checkpoint: str = "best"
    quantize: str | None = None
    force: bool = False
    data: Path | list[Path] | None = None  # the run's corpus (files, folders), if it moved
    name: str | None = None
    heldout: list[Path] = field(default_factory=list)
    card_notes: Path | None = None
    command: str | None = None
    chat_template: Path | None = None  # a JSON file; None: the default (export/chat_template.py)


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    parity: ParityReport


def model_file_entry(path: Path) -> ModelFile:
    data = path.read_bytes()
    return ModelFile(path.name, sha256_bytes(data), len(data))


def export_run(request: ExportRequest) -> ExportResult:
    """Export, gate and write one artifact directory atomically. Every input and the output
    path are checked, and the output locked, before the long work starts."""
    if request.quantize not in (None, "int8"):
        raise UsageError(f"--quantize supports only int8, got {request.quantize!r}")
    notes = read_card_notes(request.card_notes)
    template = read_chat_template(request.chat_template)
    check_readable_files(request.heldout, "--heldout")
    target = check_output_dir(request.out, request.run_dir, request.force)
    check_name(request.name or target.name)
    with output_lock(target):
        check_output_dir(request.out, request.run_dir, request.force)  # as it is now, locked
        try:
            return _export(request, notes, template)
        except FileExistsError:  # something else created --out meanwhile: it is left alone
            raise UsageError(f"{request.out} appeared during the export; nothing was "
                             "replaced") from None


def _export(request: ExportRequest, notes: str, template: ChatTemplate | None
            ) -> ExportResult:
    checkpoint = load_checkpoint(find_checkpoint(request.run_dir, request.checkpoint))
    check_finite_weights(checkpoint)
    model = model_from_checkpoint(checkpoint)
    corpus = checkpoint.corpus
    vocab = Vocabulary(checkpoint.vocab)
    chat_notes: list[str] = []  # said once the artifact is written, not before a refusal
    chat = chat_template_for(template, vocab, chat_notes.append)
    val = validation_tokens(request, checkpoint, vocab)
    streams = checkpoint.train_config.val_streams
    whole = eval_spans(len(val), streams)
    val_loss = mean_nll(model, val, whole)
    if not math.isfinite(val_loss):
        raise QualityGateError(f"the validation loss is not finite ({val_loss}): the "
                               "checkpoint diverged")
    checked = eval_spans(len(val), streams, SDK_CHECK_CHARS)
    torch_checked = val_loss if checked == whole else mean_nll(model, val, checked)
    checked_texts = [vocab.decode(val[a:b]) for a, b in checked]
    prompt = corpus_prompt(vocab.decode(val[:SOURCE_CHARS]))

    try:
        with atomic_directory(request.out, replace=request.force,
                              check=check_replaceable) as tmp:
            graph = export_onnx(model)
            onnx.save_model(graph, str(tmp / "model.onnx"))
            files = {"fp32": model_file_entry(tmp / "model.onnx")}
            config = checkpoint.model_config
            provenance: dict[str, Any] = {
                "corpus": {"name": corpus.name, "sha256": corpus.sha256,
                           "length": corpus.length, "documents": corpus.documents},
                "split": {"val_fraction": corpus.val_fraction,
                          "train_chars": corpus.length - len(val), "val_chars": len(val)},
                "steps": checkpoint.step,
                "checkpoint": checkpoint.path.name,
                "val_loss_nats": val_loss,
                "val_bpc": bits_per_char(val_loss),
                "val_streams": len(whole),
                "val_loss_nats_training_eval": checkpoint.state.get("val_loss"),
                "train_config": checkpoint.state["train_config"],
                # the parsed config, so fields an older checkpoint predates show their defaults
                "model_config": asdict(checkpoint.model_config),
                "prompt": prompt,
            }
            lineage = checkpoint_lineage(checkpoint)
            if lineage is not None:
                provenance["parent"] = {"name": lineage.name, "kind": lineage.kind,
                                        "sha256": lineage.sha256,
                                        "vocab_size": lineage.vocab_size,
                                        "added_characters": lineage.added_characters}
            fields = ManifestContent(
                name=request.name or request.out.name,
                bard_version=metadata.version("bard"),
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                vocabulary=list(checkpoint.vocab),
                model=ModelSizes("char-lstm", config.vocab_size, config.embedding_dim,
                                 config.hidden_size, config.num_layers,
                                 sum(p.numel() for p in model.parameters())),
                opset=OPSET, files=files, provenance=provenance, chat_template=chat)
            write_manifest(tmp, fields)

            sdk_model = bard_sdk.load(tmp, device="cpu")
            parity = check_parity(model, sdk_model, prompt)
            sdk_val = sdk_score(sdk_model, checked_texts)
            if not abs(sdk_val - torch_checked) <= 1e-4:
                raise ParityError(f"validation loss via bard_sdk {sdk_val:.6f} differs from "
                                  f"PyTorch {torch_checked:.6f}")
            check = {"chars": sum(b - a for a, b in checked), "streams": len(checked),
                     "torch_nats": torch_checked, "sdk_nats": sdk_val}
            if request.quantize == "int8":
                quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
                files["int8"] = model_file_entry(tmp / "model.int8.onnx")
                write_manifest(tmp, fields)
                int8_val = sdk_score(bard_sdk.load(tmp, device="cpu", variant="int8"),
                                     checked_texts)
                if not int8_val - torch_checked <= INT8_TOLERANCE:
                    raise QualityGateError(
                        f"int8 validation loss {int8_val:.4f} is "
                        f"{int8_val - torch_checked:.4f} nats per character worse than float "
                        f"({torch_checked:.4f}); limit {INT8_TOLERANCE}")
                check["int8_nats"] = int8_val
                provenance["val_loss_nats_int8"] = int8_val
                provenance["val_bpc_int8"] = bits_per_char(int8_val)
            provenance["sdk_check"] = check
            provenance["parity"] = {"max_logits_diff": parity.max_logits_diff,
                                    "max_state_diff": parity.max_state_diff,
                                    "stepwise_max_diff": parity.stepwise_max_diff,
                                    "greedy_chars_identical": parity.greedy_chars,
                                    "greedy_near_tie_at": parity.greedy_near_tie_at,
                                    "worst_share_of_limit": parity.worst_fraction}
            manifest = write_manifest(tmp, fields)
            heldout = [evaluate_heldout(sdk_model, path) for path in request.heldout]
            write_card(tmp, str(request.out), fields, bard_sdk.load(tmp, device="cpu"),
                       heldout, notes, request.command)
            png = request.run_dir / "loss_curve.png"
            if png.exists():
                (tmp / "loss_curve.png").write_bytes(png.read_bytes())
    except PermissionError as err:
        raise UsageError(f"output path is not writable: {request.out} ({err})") from None
    for note in chat_notes:
        say(note)
    return ExportResult(request.out, manifest, parity)


def checkpoint_lineage(checkpoint: Checkpoint) -> Lineage | None:
    """The parent a fine-tuned run's checkpoint names (None: trained from scratch)."""
    return Lineage.from_json(checkpoint.state.get("lineage"),
                             f"{checkpoint.path / 'state.json'} lineage")


def check_finite_weights(checkpoint: Checkpoint) -> None:
    for name, tensor in checkpoint.weights.items():
        if not bool(torch.isfinite(tensor).all()):
            raise QualityGateError(f"checkpoint {checkpoint.path.name} has non-finite weights "
                                   f"({name}): the run diverged")


def validation_tokens(request: ExportRequest, checkpoint: Checkpoint,
                      vocab: Vocabulary) -> np.ndarray:
    """The validation split's ids from the run's token file (rebuilt from the corpus if it
    is missing or damaged; --data names a corpus that has moved)."""
    corpus = checkpoint.corpus
    source = CorpusSource(request.data or corpus.sources())
    try:
        tokens = prepare_tokens(request.run_dir, source, corpus.sha256, vocab, say,
                                check_source=request.data is not None).open()
    except OSError as err:
        raise UsageError(f"cannot rebuild the token file in {request.run_dir}: {err}") from None
    return tokens[split_point(len(tokens), corpus.val_fraction):]


def say(message: str) -> None:
    print(f"bard export: {message}", file=sys.stderr, flush=True)


def mean_nll(model: CharLSTM, val: np.ndarray, spans: list[tuple[int, int]]) -> float:
    result = stream_nll(model, val, spans, next(model.parameters()).device)
    if result is None:  # only a stop callback abandons an evaluation, and there is none
        raise RuntimeError("evaluation abandoned without a stop request")
    total, count = result
    return total / count


def sdk_score(model: bard_sdk.Model, texts: list[str]) -> float:
    """Nats per character over the streams, each scored from the zero state by bard_sdk."""
    scores = [model.score(text) for text in texts]
    return sum(s.total_nats for s in scores) / sum(s.characters for s in scores)


def write_manifest(directory: Path, fields: ManifestContent | Mapping[str, Any]
                   ) -> dict[str, Any]:
    """Write manifest.json (atomically) from the typed manifest (or its JSON fields)."""
    content = fields if isinstance(fields, ManifestContent) else ManifestContent.from_json(fields)
    manifest = content.to_json()
    try:
        text = json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False)
    except ValueError as err:  # a NaN or infinity: the gates above should have refused it
        raise QualityGateError(f"manifest would hold a non-finite number ({err})") from None
    atomic_write_text(directory / MANIFEST_FILE, text + "\n")
    return manifest


def evaluate_heldout(model: bard_sdk.Model, path: Path) -> HeldOut:
    """Score a held-out text; characters outside the vocabulary are skipped and counted."""
    text = read_text(path)
    unknown = int((model.vocab.lookup(code_points(text)) < 0).sum())
    score = model.score(text, on_unknown="skip")
    return HeldOut(path.name, len(text), unknown, score.nats_per_char, score.bits_per_char)
