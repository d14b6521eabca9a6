"""Early stops: a run stopped at any moment is either resumable or gone (never a directory
that neither starts nor resumes); resume refuses a corpus that changed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from bard.training.errors import UsageError
from bard.training.train import RunRequest, train

from tests.cli.test_cli import SMALL, start_training, wait_for_line
from tests.conftest import SHARED_DATA, bard_cli

VERBOSE = [a for a in SMALL if a != "--quiet"]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 24 MB: scanning and encoding it takes long enough to be stopped in."""
    path = tmp_path_factory.mktemp("corpus") / "big.txt"
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    with path.open("w", encoding="utf-8") as out:
        for _ in range(22):
            out.write(text)
    return path


def assert_resumable_or_gone(run: Path, err: str) -> None:
    if not run.exists():
        assert "was removed" in err and "same command starts it again" in err, err
        return
    assert (run / "checkpoints" / "last.json").is_file(), sorted(os.listdir(run))
    assert "resume with" in err, err


@pytest.mark.parametrize(("moment", "sig"), [
    ("bard train: encoding", signal.SIGTERM),  # the corpus being encoded
    ("bard train: encoding", signal.SIGINT),   # Ctrl-C there
    ("parameters on", signal.SIGTERM),         # training has started
    (None, signal.SIGTERM),                    # as soon as it runs: the interpreter starting
])
def test_a_stop_at_any_moment_leaves_a_run_to_resume_or_nothing(
        tmp_path: Path, big_corpus: Path, moment: str | None, sig: int) -> None:
    run = tmp_path / "run"
    process = start_training(*VERBOSE, "--data", str(big_corpus), "--max-steps", "100000",
                             "--eval-interval", "100000", "--val-fraction", "0.001",
                             "--out", str(run))
    if moment is not None:
        wait_for_line(process, moment)
    process.send_signal(sig)
    _, err = process.communicate(timeout=300)
    assert process.returncode in (128 + sig, -sig), err
    assert "Traceback" not in err, err
    if process.returncode == -sig:  # killed before bard set its handlers: wrote nothing
        assert not run.exists()
    else:
        assert_resumable_or_gone(run, err)
    if moment == "bard train: encoding":
        assert not run.exists(), "stopped while encoding: nothing to resume, removed"
    again = (["--resume", str(run), "--quiet"] if run.exists() else
             [*SMALL, "--data", str(big_corpus), "--out", str(run), "--val-fraction", "0.001"])
    done = bard_cli("train", *again, "--max-steps", "12", "--eval-interval", "12")
    assert done.returncode == 0, done.stderr


def small_run(tmp_path: Path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((SHARED_DATA / "sonnets.txt").read_text(encoding="utf-8"),
                      encoding="utf-8")
    run = tmp_path / "run"
    train(RunRequest(out=run, data=corpus, preset="tiny", device="cpu", show_progress=False,
                     overrides=dict(hidden_size=16, embedding_dim=8, batch_size=4,
                                    seq_len=16, max_steps=2, eval_interval=2)))
    return corpus, run


def resume(run: Path, steps: int) -> None:
    train(RunRequest(out=run, resume=True, device="cpu", show_progress=False,
                     overrides={"max_steps": steps}, extend=True))


@pytest.mark.parametrize("created", [True, False])
def test_removing_an_unfinished_run_takes_its_temporary_files_too(tmp_path: Path,
                                                                  created: bool) -> None:
    """A signal can land just as an atomic write creates its temporary file, before the
    writer can remove it on the way out (it did, once in CI): the removal takes those too,
    and leaves what the run did not write."""
    from bard.training.train import remove_unfinished_run

    run = tmp_path / "run"
    run.mkdir()
    ours = ["run.json", "corpus.json", "corpus.uint8.bin", ".corpus.uint8.bin.wv5_sx5a.tmp",
            ".run.json.k2j4.tmp", ".corpus.uint16.bin.a1b2.tmp", "metrics.jsonl"]
    for name in ours:
        (run / name).write_bytes(b"x")
    (run / "checkpoints").mkdir()
    if not created:
        (run / "notes.txt").write_text("the user's", encoding="utf-8")
        (run / ".notes.txt.abcd.tmp").write_text("the user's too", encoding="utf-8")
    remove_unfinished_run(run, created)
    if created:
        assert not run.exists()
    else:
        assert sorted(os.listdir(run)) == [".notes.txt.abcd.tmp", "notes.txt"]


def test_resume_refuses_a_corpus_that_changed(tmp_path: Path) -> None:
    corpus, run = small_run(tmp_path)
    with corpus.open("a", encoding="utf-8") as out:
        out.write("\nA line the run never saw.\n")
    with pytest.raises(UsageError) as caught:
        resume(run, 4)
    message = str(caught.value)
    assert str(corpus) in message and "changed" in message and "--out" in message
    assert "\n" not in message


def test_resume_accepts_a_corpus_only_touched_or_moved(tmp_path: Path) -> None:
    corpus, run = small_run(tmp_path)
    stat = corpus.stat()
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same text, newer
    resume(run, 4)
    corpus.rename(tmp_path / "elsewhere.txt")  # gone: the run's token file serves
    resume(run, 6)
