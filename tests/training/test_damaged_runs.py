"""Damaged run directories: one line naming the file and the field, never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bard.export.export import ExportRequest, export_run
from bard.training.checkpoint import find_checkpoint
from bard.training.errors import UsageError
from bard.training.train import RunRequest, train

from tests.cli.test_cli import assert_one_line_error
from tests.conftest import TINY, bard_cli

SMALL = dict(TINY, hidden_size=16, num_layers=1, max_steps=10, eval_interval=10)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("damaged") / "run"
    train(RunRequest(out=out, preset="tiny", overrides=SMALL, device="cpu",
                     show_progress=False))
    return out


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def state(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda run: edit_json(find_checkpoint(run, "last") / "state.json", change)


def without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda s: {k: v for k, v in s.items() if k != key}


def with_value(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda s: {**s, key: value}


def truncate_metrics(run: Path) -> None:
    path = run / "metrics.jsonl"
    path.write_text(path.read_text()[:-20])


CASES = [
    ("missing files", state(without("files")), "state.json", "'files'"),
    ("missing vocab", state(without("vocab")), "state.json", "'vocab'"),
    ("missing step", state(without("step")), "state.json", "'step'"),
    ("missing model_config", state(without("model_config")), "state.json", "'model_config'"),
    ("missing rng", state(without("rng")), "state.json", "'rng'"),
    ("missing best_val_loss", state(without("best_val_loss")), "state.json",
     "'best_val_loss'"),
    ("files is a list", state(with_value("files", [])), "state.json", "'files'"),
    ("step is text", state(with_value("step", "abc")), "state.json", "'step'"),
    ("hidden_size is text",
     state(lambda s: {**s, "model_config": {**s["model_config"], "hidden_size": "128"}}),
     "state.json model_config", "'hidden_size'"),
    ("garbage rng", state(with_value("rng", [{"torch": "garbage!", "sampler": "AAAA"}])),
     "state.json", "'rng'"),
    ("rng is text", state(with_value("rng", "garbage")), "state.json", "'rng'"),
    ("run.json is {}", lambda run: (run / "run.json").write_text("{}"), "run.json",
     "'corpus'"),
    ("run.json is []", lambda run: (run / "run.json").write_text("[]"), "run.json",
     "JSON object"),
    ("truncated metrics line", truncate_metrics, "metrics.jsonl line 3", "not valid JSON"),
]


@pytest.mark.parametrize(("damage", "where", "field"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_resume_of_a_damaged_run_is_one_line_naming_file_and_field(
        small_run: Path, tmp_path: Path, damage: Callable[[Path], None], where: str,
        field: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    damage(run)
    with pytest.raises(UsageError) as caught:
        train(RunRequest(out=run, resume=True, device="cpu", show_progress=False))
    message = str(caught.value)
    assert "\n" not in message and where in message and field in message, message


def test_the_cli_says_it_in_one_line_with_exit_2(small_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    state(with_value("step", "abc"))(run)
    assert_one_line_error(bard_cli("train", "--resume", str(run)), "'step'")
    assert_one_line_error(bard_cli("export", str(run), "--out", str(tmp_path / "art"),
                                   "--checkpoint", "last"), "'step'")
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("case", ["missing files", "missing vocab", "hidden_size is text"])
def test_export_of_a_damaged_checkpoint_is_refused(small_run: Path, tmp_path: Path,
                                                   case: str) -> None:
    damage, _, field = next(c[1:] for c in CASES if c[0] == case)
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    damage(run)
    with pytest.raises(UsageError, match=field):
        export_run(ExportRequest(run_dir=run, out=tmp_path / "art", checkpoint="last"))
    assert not (tmp_path / "art").exists()
