"""`bard generate`, `eval` and `train` given careless input: one-line errors (exit 2), strict
JSON, shell-typed escapes, and nothing half-printed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bard_sdk
import pytest
from typer.testing import CliRunner

from bard.cli import app
from tests.cli.test_cli import SMALL, assert_one_line_error
from tests.conftest import bard_cli
from tests.sdk.hostile import edit_manifest


def bard_here(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, run in this process (no interpreter start per case). A bug shows as exit
    code 1 with the exception kept by the runner, so exit code 2 still means a user error."""
    result = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(["bard", *args], result.exit_code, result.stdout,
                                       result.stderr)


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["-n", "99999999999999999999"], "max_new_chars must be an integer in [0, 1000000000]"),
     (["-n", "1000000000000"], "max_new_chars"),
     (["--seed", "99999999999999999999"], "seed must be an integer"),
     (["--temperature", "nan"], "temperature must be a finite number"),
     (["--stop", "\\q"], "unknown escape '\\q'"), (["--stop", "a\\"], "unknown escape"),
     (["--stop", "[aside]"], "can never occur"), (["--num-samples", "10000000"], "--num-samples"),
     (["--stream", "--top-p", "2"], "top_p")],
)
def test_generate_bad_input(tiny_artifact: Path, args: list[str], needle: str) -> None:
    result = bard_here("generate", "ROMEO:", "--model", str(tiny_artifact), *args)
    assert_one_line_error(result, needle)
    assert result.stdout == "", "nothing printed before the error"


def test_stop_escapes_typed_in_a_shell(tiny_artifact: Path) -> None:
    art = str(tiny_artifact)
    # a literal backslash-n would be refused: "\\" is not in the vocabulary
    typed = bard_cli("generate", "ROMEO:", "--model", art, "-n", "100000000", "--seed", "3",
                     "--stop", "\\n", "--stop", " ", check=True)
    expected = bard_sdk.load(tiny_artifact).generate("ROMEO:", 10**8, seed=3, stop=["\n", " "],
                                                     temperature=0.8)
    assert typed.stdout == "ROMEO:" + expected + "\n"
    tiny = bard_cli("generate", "ROMEO:", "--model", art, "-n", "40", "--temperature", "1e-320",
                    check=True)
    greedy = bard_cli("generate", "ROMEO:", "--model", art, "-n", "40", "--temperature", "0",
                      check=True)
    assert tiny.stdout == greedy.stdout


def test_prompt_that_is_not_utf8(tiny_artifact: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bard", "generate", b"ROMEO\xff",
                             "--model", str(tiny_artifact)], capture_output=True, text=True,
                            timeout=120)
    assert_one_line_error(result, "not valid UTF-8")


def test_manifest_text_is_printed_escaped(artifact_copy: Path) -> None:
    edit_manifest(artifact_copy, lambda m: m.update(name="x\x1b]0;owned\x07\u202e"))
    result = bard_here("generate", "ROMEO:", "--model", str(artifact_copy), "-n", "5")
    assert result.returncode == 0, result.stderr
    assert "[x\\x1b]0;owned\\x07\\u202e on cpu, fp32]" in result.stderr
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr


def test_eval_refuses_what_is_not_a_text_file(tiny_artifact: Path, tmp_path: Path) -> None:
    art = str(tiny_artifact)
    os.mkfifo(tmp_path / "fifo")
    assert_one_line_error(bard_here("eval", str(tmp_path), "--model", art), "is a directory")
    assert_one_line_error(bard_cli("eval", str(tmp_path / "fifo"), "--model", art, timeout=60),
                          "not a regular file")
    assert_one_line_error(bard_here("eval", str(tmp_path / "none.txt"), "--model", art),
                          "file not found")


@pytest.mark.parametrize("text", ["", "R"])
def test_eval_json_is_strict_when_there_is_nothing_to_score(
        tiny_artifact: Path, tmp_path: Path, text: str) -> None:
    path = tmp_path / "short.txt"
    path.write_text(text)
    result = bard_here("eval", str(path), "--model", str(tiny_artifact), "--json")
    assert result.returncode == 0, result.stderr

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")
    parsed = json.loads(result.stdout, parse_constant=refuse)
    assert parsed["characters"] == 0
    assert parsed["nats_per_char"] is None and parsed["bits_per_char"] is None
    plain = bard_here("eval", str(path), "--model", str(tiny_artifact))
    assert plain.returncode == 0 and "nothing to score" in plain.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--seed", "99999999999999999999"], "seed must be an integer in [0, 2**32)"),
     (["--weight-decay", "nan"], "weight decay must be a finite number"),
     (["--learning-rate", "inf"], "learning rate must be a finite number")],
)
def test_train_bad_numbers(tmp_path: Path, args: list[str], needle: str) -> None:
    result = bard_here("train", *SMALL, *args, "--out", str(tmp_path / "run"))
    assert_one_line_error(result, needle)
    assert not (tmp_path / "run").exists()


def test_train_into_a_read_only_directory(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from bard.training import corpus as corpus_module
    from bard.training import train as train_module
    from bard.training.errors import UsageError
    from bard.training.train import RunRequest

    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: fail the write as a read-only mount would
        def denied(path: Path, **options: object) -> None:  # the run's first write
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(corpus_module, "atomic_writer", denied)
    else:
        locked.chmod(0o555)
    try:
        with pytest.raises(UsageError, match=r"cannot write the run directory .*Permission"):
            train_module.train(RunRequest(out=locked / "run", preset="tiny", device="cpu",
                                          overrides={"max_steps": 1}, show_progress=False))
    finally:
        locked.chmod(0o755)
        shutil.rmtree(locked / "run", ignore_errors=True)
