"""Users' text of any shape from the command line: long prompts from files and standard
input, --replacement, hints in the CLI's spelling, streamed batches in a pipe, and `bard
eval` of any size (streamed, bounded memory, progress, interruptible, same result)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import bard_sdk
import pytest

from tests.cli.test_careless_input import bard_here
from tests.cli.test_cli import assert_one_line_error
from tests.conftest import SHARED_DATA, bard_cli

SONNETS = (SHARED_DATA / "sonnets.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> bard_sdk.Model:
    return bard_sdk.load(tiny_artifact, device="cpu")


def shakespeare_text(model: bard_sdk.Model, size: int) -> str:
    known = "".join(ch for ch in SONNETS if ch in model.vocab)
    return (known * (size // len(known) + 1))[:size]


def test_a_prompt_too_long_for_a_command_line_from_a_file_or_stdin(
        tiny_artifact: Path, model: bard_sdk.Model, tmp_path: Path) -> None:
    prompt = shakespeare_text(model, 200_000)  # the shell refuses this as an argument
    path = tmp_path / "chapter.txt"
    path.write_text(prompt, encoding="utf-8")
    expected = prompt + model.generate(prompt, 30, seed=4, temperature=0.8) + "\n"
    args = ["--model", str(tiny_artifact), "-n", "30", "--seed", "4"]
    from_file = bard_cli("generate", "--prompt-file", str(path), *args, check=True)
    assert from_file.stdout == expected
    piped = subprocess.run([sys.executable, "-m", "bard", "generate", "-", *args],
                           input=prompt, capture_output=True, text=True, timeout=300, check=True)
    assert piped.stdout == expected
    assert_one_line_error(bard_here("generate", "ROMEO:", "--prompt-file", str(path), *args),
                          "not both")
    assert_one_line_error(bard_here("generate", "--prompt-file", str(tmp_path / "no.txt"),
                                    *args), "file not found")


def test_replace_on_generate_and_every_hint_in_the_cli_spelling(
        tiny_artifact: Path, model: bard_sdk.Model) -> None:
    art = ["--model", str(tiny_artifact), "-n", "20", "--seed", "2"]
    unknown = bard_here("generate", "ROMEO[", *art)
    assert_one_line_error(unknown, "--on-unknown skip")
    assert "on_unknown=" not in unknown.stderr and "--replacement CHAR" in unknown.stderr
    no_char = bard_here("generate", "ROMEO[", "--on-unknown", "replace", *art)
    assert_one_line_error(no_char, "--on-unknown replace needs --replacement")
    assert "on_unknown=" not in no_char.stderr
    wrong = bard_here("generate", "ROMEO[", "--on-unknown", "replace", "--replacement", "[",
                      *art)
    assert_one_line_error(wrong, "--replacement")
    assert "on_unknown=" not in wrong.stderr
    replaced = bard_here("generate", "ROMEO[", "--on-unknown", "replace", "--replacement",
                         " ", *art)
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout == "ROMEO[" + model.generate(
        "ROMEO ", 20, seed=2, temperature=0.8) + "\n"
    evaluated = bard_here("eval", "-", *art[:2])  # CliRunner: stdin is empty
    assert evaluated.returncode == 0, evaluated.stderr


def test_a_streamed_batch_in_a_pipe_is_written_as_it_is_made(tiny_artifact: Path) -> None:
    args = ["generate", "ROMEO:", "--model", str(tiny_artifact), "--num-samples", "3",
            "--seed", "5"]
    plain = bard_cli(*args, "-n", "200", check=True).stdout
    streamed = bard_cli(*args, "-n", "200", "--stream", check=True).stdout
    assert streamed == plain, "the documented format: the unstreamed one, sample by sample"
    process = subprocess.Popen([sys.executable, "-m", "bard", *args, "-n", "1000000000",
                                "--stream"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        first = process.stdout.read(len("--- sample 1 ---\nROMEO:") + 200)
        assert process.poll() is None, "text arrived while the samples were being made"
        assert first.startswith(b"--- sample 1 ---\nROMEO:")
    finally:
        process.kill()
        process.wait(timeout=60)


def test_eval_streams_any_text_to_the_same_result(tiny_artifact: Path, model: bard_sdk.Model,
                                                  tmp_path: Path) -> None:
    """Across piece boundaries, with characters of several UTF-8 lengths and unknown ones."""
    text = ("Ham. [Aside] A little more than kin — and less than kind. Æ€𝄞\n" * 4000)
    path = tmp_path / "hamlet.txt"
    path.write_text(text, encoding="utf-8")
    for split, part in (("all", text), ("val", text[int(len(text) * 0.9):]),
                        ("train", text[: int(len(text) * 0.9)])):
        result = json.loads(bard_here("eval", str(path), "--model", str(tiny_artifact),
                                      "--json", "--on-unknown", "skip", "--split",
                                      split).stdout)
        score = model.score(part, on_unknown="skip")
        assert result["characters"] == score.characters
        assert abs(result["nats_per_char"] - score.nats_per_char) <= 1e-6
    piped = subprocess.run([sys.executable, "-m", "bard", "eval", "-", "--model",
                            str(tiny_artifact), "--json", "--on-unknown", "replace",
                            "--replacement", " "], input=text.encode(), capture_output=True,
                           timeout=300, check=True)
    score = model.score(text, on_unknown="replace", replacement=" ")
    assert abs(json.loads(piped.stdout)["nats_per_char"] - score.nats_per_char) <= 1e-6
    unknown = bard_here("eval", str(path), "--model", str(tiny_artifact))
    assert_one_line_error(unknown, "'[' at 5")
    assert "--on-unknown skip" in unknown.stderr


def ctrl_c_as_a_terminal() -> None:
    """A background shell starts its children with SIGINT ignored (and Python then keeps
    it ignored); a user at a terminal has it at its default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_eval_shows_progress_and_stops_on_ctrl_c(tiny_artifact: Path, model: bard_sdk.Model,
                                                 tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text(shakespeare_text(model, 20_000), encoding="utf-8")
    shown = bard_cli("eval", str(small), "--model", str(tiny_artifact), "--progress",
                     check=True)
    assert "chars/s" in shown.stderr and "20,000" in shown.stderr
    big = tmp_path / "big.txt"
    big.write_text(shakespeare_text(model, 30_000_000), encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "bard", "eval", str(big), "--model",
                                str(tiny_artifact), "--no-progress"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_a_terminal)
    assert process.stderr is not None
    assert "on cpu" in process.stderr.readline()  # the model is loaded: scoring begins
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "interrupted after" in err and "of 30,000,000 characters" not in out
    assert "Traceback" not in err and out == ""


RSS_SCRIPT = """
import sys, bard_sdk
model = bard_sdk.load(sys.argv[1], device="cpu", threads=1)
with open(sys.argv[2], "rb") as stream:
    score = bard_sdk.score_stream(model, stream)
assert score.characters > 0
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_eval_memory_follows_the_piece_not_the_text(tiny_artifact: Path,
                                                    model: bard_sdk.Model,
                                                    tmp_path: Path) -> None:
    """Beyond the model, at most 1.1 bytes per character of the file (held whole, the text
    cost ~13 bytes per character)."""
    peaks = {}
    for size in (100_000, 3_000_000):
        path = tmp_path / f"{size}.txt"
        path.write_text(shakespeare_text(model, size), encoding="utf-8")
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tiny_artifact), str(path)],
                             capture_output=True, text=True, timeout=600, check=True)
        peaks[size] = int(out.stdout.split()[-1]) * 1024
    extra = peaks[3_000_000] - peaks[100_000]
    assert extra <= 1.1 * 2_900_000, f"{extra / 2_900_000:.2f} bytes per character"
