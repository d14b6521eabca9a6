"""The training loop: outputs on disk, exact resume and its horizon, the non-finite guard,
bounded evaluation, early stopping, run-dir safety."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from bard.training import train as train_module
from bard.training.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from bard.training.config import PRESETS, TrainConfig
from bard.training.data import Splits, eval_spans
from bard.training.errors import TrainingDiverged, UsageError
from bard.training.evaluate import stream_nll
from bard.training.schedule import Schedule
from bard.training.train import RunRequest, learning_rate_at, train
from safetensors.torch import load_file

from tests.conftest import TINY

SMALL = dict(TINY, hidden_size=32, num_layers=1, max_steps=20, eval_interval=10)


def run(out: Path, **overrides: object) -> train_module.TrainResult:
    return train(RunRequest(out=out, preset="tiny", overrides={**SMALL, **overrides},
                            device="cpu", show_progress=False))


def resume(out: Path, **options: object) -> train_module.TrainResult:
    overrides = options.pop("overrides", {})
    return train(RunRequest(out=out, resume=True, overrides=overrides,  # type: ignore[arg-type]
                            device="cpu", show_progress=False, **options))  # type: ignore[arg-type]


def poison_forward(monkeypatch: pytest.MonkeyPatch, call: int, training: bool) -> None:
    """Make the `call`-th forward pass (in training or in evaluation mode) return NaN."""
    real_forward = train_module.CharLSTM.forward
    calls = {"n": 0}

    def poisoned(self, tokens, state=None, **options):  # type: ignore[no-untyped-def]
        logits, *rest = real_forward(self, tokens, state, **options)
        if self.training == training:
            calls["n"] += 1
            if calls["n"] == call:
                logits = logits * float("nan")
        return (logits, *rest)

    monkeypatch.setattr(train_module.CharLSTM, "forward", poisoned)


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
    tokens = np.fromfile(tiny_run / "corpus.uint8.bin", dtype=np.uint8)
    assert len(tokens) == 1_115_394 and int(tokens.max()) == 64
    whole = [r for r in records if r["split"] == "val_whole"]
    best = json.loads((find_checkpoint(tiny_run, "best") / "state.json").read_text())
    assert len(whole) == 1 and best["val_loss_whole_split"] == whole[0]["loss"]
    assert best["schedule"]["total_steps"] == 60


def test_no_pickle_in_run_directory(tiny_run: Path) -> None:
    suffixes = {p.suffix for p in tiny_run.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".jsonl", ".safetensors", ".png", ".bin"}


def test_every_json_file_is_strict(tiny_run: Path) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-strict JSON constant {name}")

    for path in tiny_run.rglob("*.json*"):
        for line in ([path.read_text()] if path.suffix == ".json" else
                     path.read_text().splitlines()):
            json.loads(line, parse_constant=refuse)


def test_learning_rate_schedule_warms_up_then_decays() -> None:
    config = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1.0,
                         min_learning_rate=0.1)
    rates = [learning_rate_at(s, config) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_a_longer_horizon_never_stretches_the_stored_schedule() -> None:
    """The issue's case: the shakespeare preset (2,800 steps) continued to 4,000."""
    config = TrainConfig(**PRESETS["shakespeare"].train)
    schedule = Schedule.from_config(config)
    assert schedule.lr_at(2799) == pytest.approx(1e-4, rel=1e-3)
    extended = schedule.extended(2800, 4000)
    rates = [extended.lr_at(s) for s in range(2790, 4000)]
    assert max(abs(a - b) for a, b in itertools.pairwise(rates)) < 1e-6, "no jump"
    assert max(rates) <= 1e-4 * 1.001
    killed = schedule.extended(1500, 4000)  # extended mid-run: continuous, then decays
    assert killed.lr_at(1500) == schedule.lr_at(1500)
    assert killed.lr_at(3999) == pytest.approx(1e-4, rel=1e-3)
    halved = killed.overridden(1e-3, None)
    assert halved.lr_at(2000) == pytest.approx(killed.lr_at(2000) / 2)


REGULARISED = {"ema_decay": 0.9, "embedding_dropout": 0.2, "activation_reg": 1.0,
               "temporal_activation_reg": 1.0, "weight_drop": 0.3}


@pytest.mark.parametrize("options", [{}, {"weight_drop": 0.3}, REGULARISED],
                         ids=["plain", "weight-drop", "ema-and-awd-regularisers"])
def test_resume_is_exact(tmp_path: Path, options: dict[str, float]) -> None:
    straight = run(tmp_path / "straight", max_steps=20, **options)
    run(tmp_path / "split", max_steps=10, decay_steps=20, **options)
    resumed = resume(tmp_path / "split", overrides={"max_steps": 20})
    assert straight.step == resumed.step == 20
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(str(find_checkpoint(tmp_path / "straight", "last") / name))
        b = load_file(str(find_checkpoint(tmp_path / "split", "last") / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert straight.last_val_loss == resumed.last_val_loss


def test_the_weight_average_is_what_is_evaluated_checkpointed_and_exported(
        tmp_path: Path) -> None:
    result = run(tmp_path / "ema", max_steps=20, ema_decay=0.9)
    last = find_checkpoint(tmp_path / "ema", "last")
    checkpoint = load_checkpoint(last)
    trained = {k[len("training_weights."):]: v for k, v in
               load_file(str(last / "optimizer.safetensors")).items()
               if k.startswith("training_weights.")}
    assert trained.keys() == checkpoint.weights.keys()
    assert any(not torch.equal(trained[k], checkpoint.weights[k]) for k in trained)
    tokens = np.fromfile(tmp_path / "ema" / "corpus.uint8.bin", dtype=np.uint8)
    config = checkpoint.train_config
    val = Splits.from_tokens(tokens, config.val_fraction, config.seq_len).val
    spans = eval_spans(len(val), config.val_streams, config.eval_chars)

    def loss_of(weights: dict[str, torch.Tensor]) -> float:
        net = model_from_checkpoint(checkpoint)
        net.load_state_dict(weights)
        total, count = stream_nll(net, val, spans, torch.device("cpu"))  # type: ignore[misc]
        return total / count

    assert loss_of(checkpoint.weights) == pytest.approx(result.last_val_loss, abs=1e-6)
    assert loss_of(trained) != pytest.approx(result.last_val_loss, abs=1e-4)
    assert not any(k.startswith("training_weights.") for k in checkpoint.weights)


def test_resume_refuses_to_change_the_model(tmp_path: Path) -> None:
    run(tmp_path / "r", max_steps=10)
    with pytest.raises(UsageError, match="cannot change hidden_size"):
        resume(tmp_path / "r", overrides={"hidden_size": 64})
    with pytest.raises(UsageError, match="without --override"):
        resume(tmp_path / "r", overrides={"learning_rate": 1e-3})


def test_a_larger_max_steps_needs_extend_which_replans_from_the_current_step(
        tmp_path: Path) -> None:
    out = tmp_path / "r"
    run(out, max_steps=10)
    with pytest.raises(UsageError, match="pass --extend"):
        resume(out, overrides={"max_steps": 20})
    with pytest.raises(UsageError, match="--extend needs a --max-steps beyond"):
        resume(out, overrides={"max_steps": 10}, extend=True)
    before = Schedule(**load_checkpoint(find_checkpoint(out, "last")).state["schedule"])
    result = resume(out, overrides={"max_steps": 20}, extend=True)
    assert result.step == 20 and result.stopped == "finished"
    after = Schedule(**load_checkpoint(find_checkpoint(out, "last")).state["schedule"])
    assert after.total_steps == 20 and after.lr_at(10) == before.lr_at(10)
    history = json.loads((out / "run.json").read_text())["history"]
    assert [h["change"] for h in history] == ["extend"] and history[0]["max_steps"] == [10, 20]


def test_non_finite_loss_stops_keeps_last_good_checkpoint_and_advice_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "nan"
    poison_forward(monkeypatch, call=15, training=True)
    with pytest.raises(TrainingDiverged, match="step 15") as caught:
        run(out, max_steps=20)
    assert caught.value.step == 15
    checkpoint = load_checkpoint(find_checkpoint(out, "last"))
    assert checkpoint.step == 10
    assert all(torch.isfinite(t).all() for t in checkpoint.weights.values())
    advice = re.search(r"bard train --resume (\S+) --override --learning-rate (\S+)",
                       str(caught.value))
    assert advice and Path(advice[1]) == out, str(caught.value)
    monkeypatch.undo()
    result = resume(out, overrides={"learning_rate": float(advice[2])}, override=True)
    assert result.stopped == "finished" and result.step == 20
    state = load_checkpoint(find_checkpoint(out, "last")).state
    assert state["train_config"]["learning_rate"] == float(advice[2])
    history = json.loads((out / "run.json").read_text())["history"]
    assert history[0]["change"] == "override" and history[0]["step"] == 10


def test_non_finite_validation_before_any_checkpoint_ends_the_run_and_frees_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "nan"
    poison_forward(monkeypatch, call=1, training=False)
    with pytest.raises(TrainingDiverged, match="validation loss is not finite") as caught:
        run(out, max_steps=10)
    assert "no checkpoint had been written" in str(caught.value)
    assert not out.exists(), "nothing half-made is left behind"
    monkeypatch.undo()
    assert run(out, max_steps=10).stopped == "finished", "the same --out works again"


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
     ({"embedding_dropout": 1.0}, "embedding dropout must be in"),
     ({"ema_decay": 1.0}, "ema decay must be in"),
     ({"ema_decay": -0.5}, "ema decay must be in"),
     ({"activation_reg": -1.0}, "activation reg must be non-negative"),
     ({"temporal_activation_reg": -0.1}, "temporal activation reg must be non-negative"),
     ({"eval_chars": 1}, "eval_chars must be at least 2"),
     ({"val_fraction": 1.0}, "val fraction")],
)
def test_nonsensical_sizes_are_refused(tmp_path: Path, overrides: dict[str, object],
                                       message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run(tmp_path / "bad", **overrides)
    assert not (tmp_path / "bad").exists()


def test_custom_corpus_is_learnt(tmp_path: Path) -> None:
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abcabcabc\n" * 400, encoding="utf-8")
    result = train(RunRequest(out=tmp_path / "run", data=corpus, preset="tiny",
                              overrides={**SMALL, "max_steps": 40, "seq_len": 16},
                              device="cpu", show_progress=False))
    checkpoint = load_checkpoint(find_checkpoint(tmp_path / "run"))
    assert checkpoint.vocab == ("\n", "a", "b", "c")
    assert result.best_val_loss < math.log(4), "learns a trivially periodic text"


def test_patience_stops_a_run_that_no_longer_improves(tmp_path: Path) -> None:
    """A learning rate far below float32 resolution leaves the weights bit-identical, so every
    evaluation equals the first: with patience 2 the run must stop at the third."""
    result = run(tmp_path / "run", max_steps=200, eval_interval=5, patience=2,
                 learning_rate=1e-30, min_learning_rate=1e-30, dropout=0.0)
    assert result.stopped == "early-stop" and result.step == 15
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "val"]
    assert len(losses) == 3 and len(set(losses)) == 1


def test_evaluation_is_bounded_and_the_best_checkpoint_is_scored_on_the_whole_split(
        tmp_path: Path) -> None:
    result = run(tmp_path / "run", max_steps=20, eval_interval=10, eval_chars=3000,
                 val_streams=4)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["chars"] for r in records if r["split"] == "val"] == [3000, 3000]
    whole = [r for r in records if r["split"] == "val_whole"]
    assert len(whole) == 1 and whole[0]["chars"] == result.val_chars == 111_540
    best = load_checkpoint(find_checkpoint(tmp_path / "run", "best"))
    model = model_from_checkpoint(best)
    val = np.fromfile(tmp_path / "run" / "corpus.uint8.bin", dtype=np.uint8)[-111_540:]
    nll, count = stream_nll(model, val, eval_spans(len(val), 4), torch.device("cpu"))
    assert count == 111_540 - 4
    assert result.whole_val_loss == best.state["val_loss_whole_split"] == \
        pytest.approx(nll / count, rel=1e-12)
    assert result.best_val_loss != result.whole_val_loss, "the subset is not the whole split"
