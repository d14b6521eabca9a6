"""The training loop: outputs on disk, exact resume, the non-finite guard, run-dir safety."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from bard.training import train as train_module
from bard.training.checkpoint import find_checkpoint, load_checkpoint
from bard.training.config import TrainConfig
from bard.training.errors import TrainingDiverged, UsageError
from bard.training.train import RunRequest, learning_rate_at, train
from safetensors.torch import load_file

from tests.conftest import TINY

SMALL = dict(TINY, hidden_size=32, num_layers=1, max_steps=20, eval_interval=10)


def run(out: Path, **overrides: object) -> train_module.TrainResult:
    return train(RunRequest(out=out, preset="tiny", overrides={**SMALL, **overrides},
                            device="cpu", show_progress=False))


def test_run_directory_holds_checkpoints_metrics_and_curve(tiny_run: Path) -> None:
    checkpoint = find_checkpoint(tiny_run, "last")
    assert (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / "optimizer.safetensors").is_file()
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["step"] == 60 and len(state["vocab"]) == 65
    assert (tiny_run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    val = [r["loss"] for r in records if r["split"] == "val"]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(val) == 2 and val[1] < val[0], "validation loss should fall"
    assert train_losses[-1] < train_losses[0]
    assert all(r["chars_per_s"] > 0 for r in records if r["split"] == "train")
    assert not list(tiny_run.rglob("*.tmp")), "no temporary files left behind"


def test_no_pickle_in_run_directory(tiny_run: Path) -> None:
    suffixes = {p.suffix for p in tiny_run.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".jsonl", ".safetensors", ".png"}


def test_learning_rate_schedule_warms_up_then_decays() -> None:
    config = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1.0,
                         min_learning_rate=0.1)
    rates = [learning_rate_at(s, config) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("weight_drop", [0.0, 0.3])
def test_resume_is_exact(tmp_path: Path, weight_drop: float) -> None:
    straight = run(tmp_path / "straight", max_steps=20, weight_drop=weight_drop)
    run(tmp_path / "split", max_steps=10, decay_steps=20, weight_drop=weight_drop)
    resumed = train(RunRequest(out=tmp_path / "split", resume=True,
                               overrides={"max_steps": 20}, device="cpu",
                               show_progress=False))
    assert straight.step == resumed.step == 20
    a = load_file(str(find_checkpoint(tmp_path / "straight", "last") / "model.safetensors"))
    b = load_file(str(find_checkpoint(tmp_path / "split", "last") / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.last_val_loss == resumed.last_val_loss


def test_resume_refuses_to_change_the_model(tmp_path: Path) -> None:
    run(tmp_path / "r", max_steps=10)
    with pytest.raises(UsageError, match="cannot change hidden_size"):
        train(RunRequest(out=tmp_path / "r", resume=True,
                         overrides={"hidden_size": 64}, device="cpu", show_progress=False))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "nan"
    real_forward = train_module.CharLSTM.forward
    calls = {"n": 0}

    def poisoned(self, tokens, state=None):  # type: ignore[no-untyped-def]
        logits, new_state = real_forward(self, tokens, state)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 15:
                logits = logits * float("nan")
        return logits, new_state

    monkeypatch.setattr(train_module.CharLSTM, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="step 15") as caught:
        run(out, max_steps=20)
    assert caught.value.step == 15
    checkpoint = load_checkpoint(find_checkpoint(out, "last"))
    assert checkpoint.step == 10
    assert all(torch.isfinite(t).all() for t in checkpoint.weights.values())


def test_existing_run_is_refused_and_left_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(out, max_steps=10)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match="already holds a training run"):
        run(out, max_steps=10)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after


def test_non_empty_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty directory"):
        run(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"num_layers": 0}, "num_layers must be at least 1"),
     ({"learning_rate": -1e-3}, "learning rate must be positive"),
     ({"batch_size": 0}, "batch_size must be at least 1"),
     ({"dropout": 1.5}, "dropout"),
     ({"weight_drop": 1.0}, "weight drop"),
     ({"val_fraction": 1.0}, "val fraction")],
)
def test_nonsensical_sizes_are_refused(tmp_path: Path, overrides: dict[str, object],
                                       message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run(tmp_path / "bad", **overrides)
    assert not (tmp_path / "bad").exists()


def test_custom_corpus_and_early_stopping(tmp_path: Path) -> None:
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abcabcabc\n" * 400, encoding="utf-8")
    result = train(RunRequest(out=tmp_path / "run", data=corpus, preset="tiny",
                              overrides={**SMALL, "max_steps": 200, "eval_interval": 5,
                                         "patience": 2, "seq_len": 16},
                              device="cpu", show_progress=False))
    checkpoint = load_checkpoint(find_checkpoint(tmp_path / "run"))
    assert checkpoint.vocab == ("\n", "a", "b", "c")
    assert result.stopped in ("early-stop", "finished")
    assert result.best_val_loss < math.log(4), "learns a trivially periodic text"
