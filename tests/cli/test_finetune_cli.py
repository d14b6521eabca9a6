"""`bard train --init-from` and `--data FOLDER` given bad input: one-line errors, exit 2, and
nothing written; a folder run end to end through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.test_careless_input import bard_here
from tests.cli.test_cli import SMALL, assert_one_line_error
from tests.export.test_reimport import with_lstm_clip


def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.txt"
    path.write_text("some text of my own\n" * 100)
    return path


@pytest.mark.parametrize(
    ("setup", "needle"),
    [("empty-folder", "holds no *.txt files"), ("binary", "NUL byte"),
     ("missing", "corpus file not found")],
)
def test_bad_data(tmp_path: Path, setup: str, needle: str) -> None:
    data = tmp_path / "docs"
    if setup != "missing":
        data.mkdir()
        (data / "notes.md").write_text("not text for training\n")
    if setup == "binary":
        (data / "a.txt").write_text("fine\n")
        (data / "photo.txt").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    out = tmp_path / "run"
    result = bard_here("train", *SMALL, "--data", str(data), "--out", str(out))
    assert_one_line_error(result, needle)
    assert not out.exists()


def test_unreadable_sources(tmp_path: Path, tiny_artifact: Path, tiny_run: Path) -> None:
    data = corpus_file(tmp_path)
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "model.onnx").write_bytes(b"not a model")
    clipped = tmp_path / "clipped"
    shutil.copytree(tiny_artifact, clipped)
    with_lstm_clip(clipped)
    broken_run = tmp_path / "broken-run"
    shutil.copytree(tiny_run, broken_run)
    state = next((broken_run / "checkpoints").glob("step-*/state.json"))
    record = json.loads(state.read_text())
    record["model_config"]["hidden_size"] = "wide"
    state.write_text(json.dumps(record))
    cases = [(neither, "neither an artifact"), (clipped, "cannot read the architecture"),
             (tmp_path / "nope", "not the name of a bundled model"),
             (broken_run, "hidden_size")]
    for source, needle in cases:
        out = tmp_path / f"run-{source.name}"
        result = bard_here("train", "--init-from", str(source), "--data", str(data),
                           "--out", str(out), "--device", "cpu", "--quiet")
        assert_one_line_error(result, needle)
        assert not out.exists()
    result = bard_here("train", "--init-from", str(tiny_artifact), "--resume", str(tiny_run))
    assert_one_line_error(result, "--init-from starts a new run")


def test_folder_and_repeated_data_through_the_cli(tmp_path: Path) -> None:
    folder = tmp_path / "lyrics"
    folder.mkdir()
    for index in range(3):
        (folder / f"song{index}.txt").write_text(f"verse {index}, la la la\n" * 40)
    extra = corpus_file(tmp_path)
    out = tmp_path / "run"
    result = bard_here("train", *SMALL[:-1], "--max-steps", "4", "--eval-interval", "2",
                       "--data", str(folder), "--data", str(extra), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "4 documents joined in order with U+001E" in result.stderr
    assert "document 4 (" in result.stderr, "the log says where validation lies"
    run = json.loads((out / "run.json").read_text())["corpus"]
    assert run["documents"] == 4 and run["inputs"] == [str(folder.resolve()),
                                                      str(extra.resolve())]
    (folder / "song1.txt").write_text("a different verse\n" * 40)
    changed = bard_here("export", str(out), "--out", str(tmp_path / "art"), "--data",
                        str(folder), "--data", str(extra))
    assert_one_line_error(changed, "differs from the one")
