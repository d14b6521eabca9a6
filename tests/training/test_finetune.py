"""Fine-tuning (`--init-from`): the grown vocabulary keeps the parent's predictions at step 0,
lineage in run.json and the checkpoints, the preset, the time limit."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from bard.training.checkpoint import find_checkpoint, load_checkpoint
from bard.training.config import PRESETS
from bard.training.corpus import bundled_corpus_bytes
from bard.training.errors import UsageError
from bard.training.finetune import (
    MARGIN,
    extend_vocabulary,
    initial_weights,
    new_character_bias,
    parent_from_run,
)
from bard.training.model import CharLSTM
from bard.training.train import RunRequest, train
from bard_sdk.vocab import Vocabulary

FAST = dict(batch_size=8, seq_len=32, max_steps=6, eval_interval=3, warmup_steps=1,
            val_streams=2)
NEW_TEXT = "Le café coûte 3€ @ Noël; «voilà»!\n" * 60


def log_probs(model: CharLSTM, ids: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        logits, _ = model.eval()(torch.from_numpy(ids.astype(np.int64))[None, :])
    return torch.log_softmax(logits.double(), dim=-1)[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_grown_vocabulary_keeps_the_parents_predictions_at_step_0(tiny_run: Path,
                                                                  seed: int) -> None:
    parent = parent_from_run(tiny_run)
    vocab, added = extend_vocabulary(parent.vocab, Vocabulary.from_text(NEW_TEXT))
    assert vocab.chars[: len(parent.vocab)] == list(parent.vocab), "old ids keep their places"
    assert added == sorted(set(NEW_TEXT) - set(parent.vocab)) and "é" in added and "€" in added
    config = dataclasses.replace(parent.model_config, vocab_size=len(vocab))
    sample = vocab.encode(NEW_TEXT)
    bias = new_character_bias(parent, config, sample)
    grown = CharLSTM(config)
    grown.load_state_dict(initial_weights(parent, config, bias))
    old = CharLSTM(parent.model_config)
    old.load_state_dict(parent.weights)

    # any text of old characters (not the sample the bias was placed on): same predictions
    text = bundled_corpus_bytes().decode()
    start = np.random.default_rng(seed).integers(0, len(text) - 2000)
    ids = Vocabulary(parent.vocab).encode(text[start : start + 2000])
    before, after = log_probs(old, ids), log_probs(grown, ids)
    assert after.shape[-1] == len(vocab)
    assert float((after[:, : len(parent.vocab)] - before).abs().max()) < 1e-6
    assert float(after[:, len(parent.vocab):].exp().sum(dim=-1).max()) < 1e-7
    # and on the new text itself the new characters take at most e**-MARGIN each
    on_sample = log_probs(grown, sample)[:, len(parent.vocab):]
    assert float(on_sample.max()) <= -MARGIN + 1e-6


def test_fine_tuning_run_records_its_parent_and_added_characters(tiny_run: Path,
                                                                 tmp_path: Path) -> None:
    corpus = tmp_path / "mine.txt"
    corpus.write_text(NEW_TEXT, encoding="utf-8")
    parent = parent_from_run(tiny_run)
    result = train(RunRequest(out=tmp_path / "ft", data=corpus, init_from=parent,
                              overrides=dict(FAST), device="cpu", show_progress=False))
    assert result.stopped == "finished" and math.isfinite(result.best_val_loss)
    run = json.loads((tmp_path / "ft" / "run.json").read_text())
    added = sorted(set(NEW_TEXT) - set(parent.vocab))
    assert run["parent"]["name"] == "tiny" and run["parent"]["kind"] == "run"
    assert run["parent"]["added_characters"] == added
    assert run["parent"]["sha256"] == parent.sha256 and len(parent.sha256) == 64
    assert run["train_config"]["learning_rate"] == PRESETS["finetune"].train["learning_rate"]
    assert run["model_config"]["hidden_size"] == parent.model_config.hidden_size
    checkpoint = load_checkpoint(find_checkpoint(tmp_path / "ft", "last"))
    assert list(checkpoint.vocab) == [*parent.vocab, *added]
    assert checkpoint.state["lineage"]["added_characters"] == added


def test_architecture_comes_from_the_source(tiny_run: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "mine.txt"
    corpus.write_text(NEW_TEXT, encoding="utf-8")
    with pytest.raises(UsageError, match="architecture comes from --init-from: hidden_size"):
        train(RunRequest(out=tmp_path / "ft", data=corpus, init_from=parent_from_run(tiny_run),
                         overrides=dict(FAST, hidden_size=999), device="cpu",
                         show_progress=False))
    assert not (tmp_path / "ft" / "run.json").exists()


def test_time_limit_stops_with_an_evaluation_and_a_checkpoint(tmp_path: Path) -> None:
    corpus = tmp_path / "mine.txt"
    corpus.write_text(NEW_TEXT * 3, encoding="utf-8")
    result = train(RunRequest(out=tmp_path / "run", data=corpus,
                              overrides=dict(FAST, hidden_size=16, num_layers=1,
                                             max_steps=10_000, max_minutes=1e-6),
                              device="cpu", show_progress=False))
    assert result.stopped == "time-limit" and result.step == 1
    assert math.isfinite(result.best_val_loss)
    assert load_checkpoint(find_checkpoint(tmp_path / "run", "last")).step == 1
