"""The data path: vocabulary, splits, vectorised batches, evaluation streams."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bard.training.data import (
    Splits,
    Vocabulary,
    read_corpus,
    sample_batch,
    split_streams,
)
from bard.training.errors import UsageError


def test_bundled_corpus_is_tinyshakespeare() -> None:
    text, name = read_corpus(None)
    assert name == "tinyshakespeare.txt"
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert text.startswith("First Citizen:\nBefore we proceed")


def test_vocabulary_is_sorted_set_and_round_trips() -> None:
    text = "to be, or not to be: that is the question\nÆsop's fable"
    vocab = Vocabulary.from_text(text)
    assert list(vocab.chars) == sorted(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == torch.long
    assert vocab.decode(ids) == text


def test_vocabulary_rejects_unknown_characters() -> None:
    with pytest.raises(UsageError, match="outside the vocabulary"):
        Vocabulary.from_text("abc").encode("abz")


def test_split_is_first_90_percent_train() -> None:
    tokens = torch.arange(1000)
    splits = Splits.from_tokens(tokens, 0.1, seq_len=8)
    assert torch.equal(splits.train, torch.arange(900))
    assert torch.equal(splits.val, torch.arange(900, 1000))


def test_batch_targets_are_inputs_shifted_by_one() -> None:
    data = torch.arange(10_000)
    inputs, targets = sample_batch(data, 32, 50, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (32, 50)
    assert torch.equal(targets[:, :-1], inputs[:, 1:])
    assert torch.equal(targets, inputs + 1)  # data is arange, so windows are contiguous
    assert int(targets.max()) < len(data)


def test_batches_are_reproducible_and_vary() -> None:
    data = torch.randint(0, 65, (5000,), generator=torch.Generator().manual_seed(1))
    first = sample_batch(data, 8, 16, torch.Generator().manual_seed(3))
    again = sample_batch(data, 8, 16, torch.Generator().manual_seed(3))
    other = sample_batch(data, 8, 16, torch.Generator().manual_seed(4))
    assert torch.equal(first[0], again[0])
    assert not torch.equal(first[0], other[0])


def test_batch_can_reach_the_last_character() -> None:
    data = torch.arange(12)
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        _, targets = sample_batch(data, 4, 5, generator)
        seen.update(targets.flatten().tolist())
    assert 11 in seen and 1 in seen


def test_streams_cover_the_text_in_order() -> None:
    data = torch.arange(1003)
    streams = split_streams(data, 7)
    assert len(streams) == 7
    assert torch.equal(torch.cat(streams), data)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\xff\xfe\xfa bad", "not valid UTF-8")],
)
def test_bad_corpus_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        read_corpus(path)


def test_missing_corpus_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        read_corpus(tmp_path / "nope.txt")


def test_corpus_shorter_than_a_window() -> None:
    with pytest.raises(UsageError, match=r"too short"):
        Splits.from_tokens(torch.arange(50), 0.1, seq_len=64)
