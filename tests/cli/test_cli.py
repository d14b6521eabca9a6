"""The `bard` command line, run as a user runs it: exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import bard_cli

SMALL = ["--preset", "tiny", "--hidden-size", "32", "--embedding-dim", "16", "--seq-len", "32",
         "--batch-size", "8", "--device", "cpu", "--quiet"]


def assert_one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines()
             if line and not line.startswith("[")]  # "[model on device]" is information
    assert len(lines) == 1 and lines[0].startswith("bard: error: "), result.stderr
    assert needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_train_export_generate_eval_smoke(tmp_path: Path) -> None:
    run = tmp_path / "run"
    bard_cli("train", *SMALL, "--max-steps", "20", "--eval-interval", "10", "--out", str(run),
             check=True)
    assert (run / "metrics.jsonl").is_file() and (run / "loss_curve.png").is_file()
    art = tmp_path / "art"
    bard_cli("export", str(run), "--out", str(art), check=True)
    generated = bard_cli("generate", "ROMEO:", "--model", str(art), "-n", "25", "--seed", "3",
                         "--num-samples", "2", check=True)
    assert generated.stdout.count("ROMEO:") == 2
    streamed = bard_cli("generate", "ROMEO:", "--model", str(art), "-n", "25", "--seed", "3",
                        "--stream", check=True)
    single = bard_cli("generate", "ROMEO:", "--model", str(art), "-n", "25", "--seed", "3",
                      check=True)
    assert streamed.stdout.strip() == single.stdout.strip()
    text = tmp_path / "t.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n")
    scored = bard_cli("eval", str(text), "--model", str(art), "--json", check=True)
    result = json.loads(scored.stdout)
    assert result["characters"] == len(text.read_text()) - 1 and result["bits_per_char"] > 0


@pytest.mark.parametrize(
    ("setup", "args", "needle"),
    [(lambda p: None, ["--data", "missing.txt"], "not found"),
     (lambda p: (p / "empty.txt").write_text(""), ["--data", "empty.txt"], "empty"),
     (lambda p: (p / "bin.txt").write_bytes(b"ok\xff\xfe"), ["--data", "bin.txt"], "UTF-8"),
     (lambda p: (p / "short.txt").write_text("abc" * 10), ["--data", "short.txt"], "too short"),
     (lambda p: None, ["--num-layers", "0"], "num_layers must be at least 1"),
     (lambda p: None, ["--learning-rate", "-0.1"], "learning rate must be positive"),
     (lambda p: None, ["--hidden-size", "-5"], "hidden_size"),
     (lambda p: None, ["--preset", "huge"], "unknown preset")],
)
def test_train_bad_input(tmp_path: Path, setup, args: list[str], needle: str) -> None:  # type: ignore[no-untyped-def]
    setup(tmp_path)
    resolved = [str(tmp_path / a) if a.endswith(".txt") else a for a in args]
    result = bard_cli("train", *SMALL, *resolved, "--out", str(tmp_path / "run"))
    assert_one_line_error(result, needle)
    assert not (tmp_path / "run").exists()


def test_train_refuses_existing_run(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = sorted((p.name, p.stat().st_size) for p in run.rglob("*"))
    result = bard_cli("train", *SMALL, "--out", str(run))
    assert_one_line_error(result, "already holds a training run")
    assert sorted((p.name, p.stat().st_size) for p in run.rglob("*")) == before


def start_training(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bard", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process: subprocess.Popen[str], needle: str) -> str:
    """Read the process's stderr until a line holds `needle` (a readiness sign, not a sleep)."""
    assert process.stderr is not None
    seen = []
    while line := process.stderr.readline():
        seen.append(line)
        if needle in line:
            return line
    process.wait(timeout=60)
    raise AssertionError(f"no line with {needle!r}; exit {process.returncode}:\n{''.join(seen)}")


def last_state(run: Path) -> dict:
    last = json.loads((run / "checkpoints" / "last.json").read_text())["checkpoint"]
    return json.loads((run / "checkpoints" / last / "state.json").read_text())


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [a for a in SMALL if a != "--quiet"]
    process = start_training(*args, "--max-steps", "100000", "--eval-interval", "100000",
                             "--out", str(run))
    wait_for_line(process, "parameters on")  # printed once the signal handlers are installed
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "resume with" in err
    step = last_state(run)["step"]
    assert step > 0
    resumed = bard_cli("train", "--resume", str(run), "--max-steps", str(step + 10),
                       "--quiet", check=True)
    assert f"at step {step + 10}" in resumed.stdout


def test_sigterm_during_evaluation_abandons_it_and_resume_reruns_it(tmp_path: Path) -> None:
    """One long evaluation (half the bundled corpus as one stream) right after step 1."""
    run = tmp_path / "run"
    args = [a for a in SMALL if a != "--quiet"]
    process = start_training(*args, "--val-fraction", "0.5", "--val-streams", "1",
                             "--eval-interval", "1", "--max-steps", "2", "--out", str(run))
    wait_for_line(process, "step 1: evaluating")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "evaluation abandoned" in err and "val loss" not in err
    state = last_state(run)
    assert state["step"] == 1 and state["pending_eval"] is True
    assert state["val_loss"] is None and state["best_val_loss"] is None  # strict JSON: null
    resumed = bard_cli("train", "--resume", str(run), "--max-steps", "1", check=True)
    assert "step 1: val loss" in resumed.stderr and "finished at step 1" in resumed.stdout


def test_divergence_before_any_checkpoint_exits_3_and_frees_the_directory(
        tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = bard_cli("train", *SMALL, "--learning-rate", "1e10", "--max-steps", "20",
                      "--eval-interval", "10", "--out", str(run))
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not finite" in lines[0] and "start again" in lines[0], lines
    assert not run.exists()
    again = bard_cli("train", *SMALL, "--max-steps", "5", "--eval-interval", "5", "--out",
                     str(run), check=True)
    assert "finished at step 5" in again.stdout


def test_export_bad_input(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty-run").mkdir()
    assert_one_line_error(
        bard_cli("export", str(tmp_path / "empty-run"), "--out", str(tmp_path / "a")),
        "no checkpoint")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(
        bard_cli("export", str(tiny_run), "--out", str(blocker / "art")), "not writable")
    (tmp_path / "exists").mkdir()
    assert_one_line_error(
        bard_cli("export", str(tiny_run), "--out", str(tmp_path / "exists")),
        "not a bard artifact")


def test_generate_and_eval_bad_input(tiny_artifact: Path, tmp_path: Path) -> None:
    art = str(tiny_artifact)
    assert_one_line_error(bard_cli("generate", "x", "--model", art, "--temperature", "-1"),
                          "temperature")
    assert_one_line_error(bard_cli("generate", "[x]", "--model", art), "'[' at 0")
    assert_one_line_error(bard_cli("generate", "x", "--model", str(tmp_path)), "manifest")
    text = tmp_path / "hamlet.txt"
    text.write_text("Ham. [Aside] A little more than kin\n")
    assert_one_line_error(bard_cli("eval", str(text), "--model", art), "not in the model")
    skipped = bard_cli("eval", str(text), "--model", art, "--on-unknown", "skip", "--json",
                       check=True)
    assert json.loads(skipped.stdout)["characters"] == len(text.read_text()) - 3


def test_train_options_are_derived_from_the_config() -> None:
    """One declaration per option (training/config.py): every one is a `bard train` flag with
    its help text, and a new config field needs no CLI edit."""
    from bard.training.config import cli_options

    shown = bard_cli("train", "--help", env={"COLUMNS": "250"}, check=True).stdout
    options = cli_options()
    assert len(options) >= 20
    for name, _, text, flags in options:
        assert f"--{name.replace('_', '-')}" in shown, name
        assert all(flag in shown for flag in flags), name
        assert text.split(".")[0][:30] in " ".join(shown.split()), name
