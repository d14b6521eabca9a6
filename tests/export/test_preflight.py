"""`bard export` never destroys what it did not create: every careless --out is refused before
any work, with the files around it byte for byte as they were."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import bard_sdk
import pytest
from bard.export import export as export_module
from bard.export.export import ExportRequest, export_run
from bard.export.preflight import output_lock
from bard.training.errors import UsageError
from bard.training.fsutil import atomic_directory

from tests.cli.test_cli import assert_one_line_error


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and directory (None) under `root`, hidden ones included."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusals below must come before the export reads its checkpoint."""
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the export work started before its inputs were checked")
    monkeypatch.setattr(export_module, "load_checkpoint", started)


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run, copy)
    return copy


def refused(request: ExportRequest, message: str, *watched: Path) -> None:
    before = [snapshot(w) for w in watched]
    with pytest.raises(UsageError, match=message):
        export_run(request)
    assert [snapshot(w) for w in watched] == before


@pytest.mark.parametrize("force", [False, True])
def test_run_directory_is_never_the_output(run: Path, no_work: None, force: bool) -> None:
    runs = run.parent
    refused(ExportRequest(run_dir=run, out=run, force=force), "is the run directory", runs)
    refused(ExportRequest(run_dir=run, out=runs, force=force), "contains the run directory",
            runs)
    refused(ExportRequest(run_dir=run, out=run / "artifact", force=force),
            "inside the run directory", runs)
    refused(ExportRequest(run_dir=run, out=run / "checkpoints" / ".." / ".." / "tiny",
                          force=force), "is the run directory", runs)


def test_current_and_home_directories_are_never_the_output(
        run: Path, tmp_path: Path, no_work: None, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "users" / "home"
    work = home / "work"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    (home / ".profile").write_text("mine too")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for out, message in ((Path("."), "is the current directory"),
                         (Path(str(work)), "is the current directory"),
                         (Path(".."), "contains the current directory")):
        refused(ExportRequest(run_dir=run, out=out, force=True), message, home)
    monkeypatch.chdir(run.parent)
    refused(ExportRequest(run_dir=run, out=home, force=True), "is your home directory", home)
    refused(ExportRequest(run_dir=run, out=home.parent, force=True),
            "contains your home directory", home)


def test_an_existing_file_is_never_replaced(run: Path, tmp_path: Path, no_work: None) -> None:
    target = tmp_path / "model"
    target.write_bytes(b"the user's file")
    refused(ExportRequest(run_dir=run, out=target, force=True), "is an existing file", tmp_path)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    refused(ExportRequest(run_dir=run, out=link, force=True), "symbolic link", tmp_path)


def test_a_directory_that_is_not_an_artifact_is_never_replaced(
        run: Path, tmp_path: Path, tiny_artifact: Path, no_work: None) -> None:
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "sub" / "data.txt").write_text("keep")
    refused(ExportRequest(run_dir=run, out=plain, force=True), "not a bard artifact", tmp_path)
    (tmp_path / "empty").mkdir()
    refused(ExportRequest(run_dir=run, out=tmp_path / "empty", force=True),
            "not a bard artifact", tmp_path)
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_artifact, mixed)
    (mixed / "my-notes.md").write_text("written by hand")
    refused(ExportRequest(run_dir=run, out=mixed, force=True),
            "files bard did not write: my-notes.md", tmp_path)
    artifact = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, artifact)
    refused(ExportRequest(run_dir=run, out=artifact), "pass --force", tmp_path)


def test_force_replaces_an_artifact_atomically(run: Path, tmp_path: Path,
                                               tiny_artifact: Path) -> None:
    out = tmp_path / "out" / "art"
    shutil.copytree(tiny_artifact, out)
    (out.parent / ".art.old").mkdir()  # a user's directory with the name bard once used
    (out.parent / ".art.old" / "keep.txt").write_text("keep")
    export_run(ExportRequest(run_dir=run, out=out, force=True, checkpoint="last"))
    assert bard_sdk.load(out).manifest.raw["provenance"]["checkpoint"] != ""
    assert sorted(p.name for p in out.parent.iterdir()) == [".art.old", "art"]
    assert (out.parent / ".art.old" / "keep.txt").read_text() == "keep"
    assert "model.int8.onnx" not in {p.name for p in out.iterdir()}, "the old files are gone"


def test_a_bad_card_notes_or_heldout_file_fails_before_the_work(
        run: Path, tmp_path: Path, no_work: None) -> None:
    out = tmp_path / "art"
    refused(ExportRequest(run_dir=run, out=out, card_notes=tmp_path / "missing.md"),
            "--card-notes file not found", tmp_path)
    (tmp_path / "latin1.md").write_bytes(b"caf\xe9")
    refused(ExportRequest(run_dir=run, out=out, card_notes=tmp_path / "latin1.md"),
            "not valid UTF-8", tmp_path)
    refused(ExportRequest(run_dir=run, out=out, card_notes=tmp_path),
            "not a regular file", tmp_path)
    refused(ExportRequest(run_dir=run, out=out, heldout=[tmp_path / "hamlet.txt"]),
            "--heldout file not found", tmp_path)
    refused(ExportRequest(run_dir=run, out=out, name="n" * 201), "1 to 200 characters",
            tmp_path)


def test_a_locked_output_refuses_a_second_export(run: Path, tmp_path: Path,
                                                 no_work: None) -> None:
    out = tmp_path / "art"
    with output_lock(out):
        refused(ExportRequest(run_dir=run, out=out), "another bard export is writing",
                tmp_path)
    assert list(tmp_path.iterdir()) == [tmp_path / "runs"], "the lock file is removed"


def test_atomic_directory_never_replaces_a_file(tmp_path: Path) -> None:
    final = tmp_path / "model"
    final.write_text("a file")
    with pytest.raises(FileExistsError), atomic_directory(final, replace=True) as tmp:
        (tmp / "x").write_text("new")
    assert final.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_two_exports_at_once_one_wins(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "art"
    command = [sys.executable, "-m", "bard", "export", str(run), "--out", str(out)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    results = [(p.returncode, *p.communicate(timeout=600)) for p in processes]
    results = [(p.returncode, out, err) for p, (_, out, err) in zip(processes, results)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(subprocess.CompletedProcess(command, c, o, e) for c, o, e in results if c == 2)
    assert_one_line_error(loser, "bard: error:")
    assert "another bard export is writing" in loser.stderr or "pass --force" in loser.stderr
    assert bard_sdk.load(out).generate("A", 5, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "runs"], "nothing left behind"
