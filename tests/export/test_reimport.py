"""Artifact -> torch (for fine-tuning): the rebuilt model passes the parity gate against the
artifact; a fine-tuned run exports its lineage and generates the characters it added."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bard_sdk
import jsonschema
import onnx
import pytest
import torch
from bard.export.export import ExportRequest, export_run
from bard.export.parity import check_parity
from bard.export.reimport import ArchitectureError, load_parent
from bard.training.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from bard.training.model import CharLSTM
from bard.training.train import RunRequest, train
from bard_sdk.vocab import Vocabulary
from onnx import helper

from tests.sdk.hostile import rehash


def rebuilt(parent_dir: Path | str) -> tuple[CharLSTM, object]:
    parent = load_parent(str(parent_dir))
    model = CharLSTM(parent.model_config)
    model.load_state_dict(parent.weights)
    return model.eval(), parent


def test_tiny_artifact_round_trips_to_the_runs_weights(tiny_artifact: Path,
                                                        tiny_run: Path) -> None:
    model, parent = rebuilt(tiny_artifact)
    report = check_parity(model, bard_sdk.load(tiny_artifact, device="cpu"), "ROMEO:")
    assert report.greedy_chars == 200
    trained = load_checkpoint(find_checkpoint(tiny_run, "best")).weights
    for name, tensor in model.state_dict().items():  # gate order undone exactly
        assert torch.equal(tensor, trained[name]), name
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    assert parent.kind == "artifact" and parent.sha256 == manifest["files"]["fp32"]["sha256"]


def test_shipped_model_round_trips_within_the_parity_gate() -> None:
    model, parent = rebuilt("shakespeare")
    assert parent.name == "shakespeare" and parent.model_config.hidden_size == 512
    assert parent.model_config.weight_drop == 0.4, "regularisation read from the provenance"
    check_parity(model, bard_sdk.load(device="cpu"), "ROMEO:")  # raises ParityError if not


def with_lstm_clip(artifact: Path) -> None:
    """A valid ONNX LSTM that is not one bard exports (a cell clip), rehashed."""
    graph = onnx.load(str(artifact / "model.onnx"))
    lstm = next(n for n in graph.graph.node if n.op_type == "LSTM")
    lstm.attribute.append(helper.make_attribute("clip", 3.0))
    onnx.save(graph, str(artifact / "model.onnx"))
    rehash(artifact)


def test_an_architecture_bard_cannot_rebuild_is_refused(artifact_copy: Path) -> None:
    with_lstm_clip(artifact_copy)
    bard_sdk.load(artifact_copy, device="cpu")  # still a loadable artifact
    with pytest.raises(ArchitectureError, match="LSTM layer 0 sets clip"):
        load_parent(str(artifact_copy))


NEW_TEXT = "«le café à Noël», dit-il. «Où ça?» «Là-bas!»\n" * 150
NEW_CHARS = {"«", "»", "é", "à", "ë", "ç", "ù"}


@pytest.fixture(scope="module")
def respelt_run(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = tmp_path_factory.mktemp("respelt") / "mine.txt"
    corpus.write_text(NEW_TEXT, encoding="utf-8")
    run = corpus.parent / "run"
    train(RunRequest(out=run, data=corpus, init_from=load_parent(str(tiny_artifact)),
                     device="cpu", show_progress=False,
                     overrides=dict(batch_size=16, seq_len=48, max_steps=150, warmup_steps=5,
                                    learning_rate=1e-2, min_learning_rate=1e-3,
                                    eval_interval=50, val_streams=2, patience=None)))
    return run


def sample(model: CharLSTM, vocab: Vocabulary, prompt: str, count: int) -> str:
    """Temperature-0.8 samples from the torch model, seeded."""
    generator = torch.Generator().manual_seed(7)
    tokens = torch.from_numpy(vocab.encode(prompt).astype("int64"))[None, :]
    out: list[int] = []
    with torch.inference_mode():
        logits, state = model(tokens)
        for _ in range(count):
            probs = torch.softmax(logits[0, -1] / 0.8, dim=-1)
            out.append(int(torch.multinomial(probs, 1, generator=generator)))
            logits, state = model(torch.tensor([[out[-1]]]), state)
    return vocab.decode(out)


def test_fine_tuned_model_generates_the_characters_it_added(tiny_artifact: Path,
                                                            respelt_run: Path) -> None:
    parent = load_parent(str(tiny_artifact))
    checkpoint = load_checkpoint(find_checkpoint(respelt_run, "best"))
    assert list(checkpoint.vocab) == [*parent.vocab, *sorted(set(NEW_TEXT) - set(parent.vocab))]
    assert set(checkpoint.vocab[len(parent.vocab):]) >= NEW_CHARS
    model = model_from_checkpoint(checkpoint)
    vocab = Vocabulary(checkpoint.vocab)
    produced = sample(model, vocab, "«le ", 1500)
    assert set(produced) >= NEW_CHARS, produced


def test_fine_tuned_export_records_lineage_and_generates_new_characters(
        respelt_run: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    parent = load_parent(str(tiny_artifact))
    out = tmp_path / "artifact"
    export_run(ExportRequest(run_dir=respelt_run, out=out))
    manifest = json.loads((out / "manifest.json").read_text())
    schema = json.loads((Path(bard_sdk.__file__).parent / "manifest.schema.json").read_text())
    jsonschema.validate(manifest, schema)
    lineage = bard_sdk.read_manifest(out).parent
    assert lineage is not None and lineage.name == "tiny" and lineage.kind == "artifact"
    assert lineage.sha256 == parent.sha256 and set(lineage.added_characters) >= NEW_CHARS
    card = (out / "README.md").read_text()
    assert "## Lineage" in card and parent.sha256 in card and "`«`" in card
    produced = bard_sdk.load(out, device="cpu").generate("«le ", 1500, seed=7)
    assert set(produced) >= NEW_CHARS, produced


def test_damaged_lineage_in_a_manifest_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "a"
    shutil.copytree(tiny_artifact, artifact)
    path = artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["provenance"]["parent"] = {"name": "x", "kind": "run", "sha256": "0" * 64,
                                        "vocab_size": 60, "added_characters": ["a"]}
    path.write_text(json.dumps(manifest))
    with pytest.raises(bard_sdk.ArtifactError, match=r"provenance\.parent does not match"):
        bard_sdk.read_manifest(artifact)
