"""The data path: corpus scan and token file, splits, vectorised batches, evaluation streams."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from bard.training import corpus as corpus_module
from bard.training.corpus import (
    CorpusSource,
    bundled_corpus_bytes,
    find_tokens,
    prepare_tokens,
    scan_corpus,
    write_tokens,
)
from bard.training.data import Splits, eval_spans, sample_batch, split_point
from bard.training.errors import UsageError
from bard_sdk.vocab import Vocabulary


def quiet(_: str) -> None:
    pass


def encode(tmp_path: Path, text: str, chunk: int | None = None) -> tuple[np.ndarray, Vocabulary]:
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    scan = scan_corpus(CorpusSource(path))
    tokens = write_tokens(tmp_path / "run", CorpusSource(path), scan.vocabulary, scan.sha256,
                          quiet)
    return tokens.open(), scan.vocabulary


def test_bundled_corpus_is_tinyshakespeare() -> None:
    scan = scan_corpus(CorpusSource(None))
    text = bundled_corpus_bytes().decode("utf-8")
    assert scan.name == "tinyshakespeare.txt"
    assert scan.length == len(text) == 1_115_394
    assert scan.vocabulary.chars == sorted(set(text)) and len(scan.vocabulary) == 65
    assert scan.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert text.startswith("First Citizen:\nBefore we proceed")


@pytest.mark.parametrize(("distinct", "dtype"), [(65, np.uint8), (300, np.uint16),
                                                 (70_000, np.uint32)])
def test_token_file_uses_the_smallest_dtype_and_round_trips(tmp_path: Path, distinct: int,
                                                            dtype: type) -> None:
    points = [p for p in range(0x21, 0x21 + distinct + 2048) if not 0xD800 <= p < 0xE000]
    text = "".join(map(chr, points[:distinct])) + "\n" + "".join(map(chr, points[:50])) * 20
    tokens, vocab = encode(tmp_path, text)
    assert isinstance(tokens, np.memmap) and tokens.dtype == dtype
    assert len(vocab) == distinct + 1 and len(tokens) == len(text)
    assert (tmp_path / "run" / f"corpus.{np.dtype(dtype).name}.bin").stat().st_size == \
        len(text) * np.dtype(dtype).itemsize
    assert vocab.decode(np.asarray(tokens)) == text


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_characters_split_across_chunks_encode_whole(tmp_path: Path, chunk: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two- to four-byte characters land on every chunk boundary; the ids are those of
    the whole text, and the mostly-ASCII, dense and ASCII-only paths agree."""
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", chunk)
    text = "ab é天😀\nxyz" * 7 + "Привет мир\n" * 5 + "plain ascii\n" * 3
    tokens, vocab = encode(tmp_path, text)
    assert np.asarray(tokens).tolist() == vocab.encode(text).tolist()
    assert vocab.chars == sorted(set(text))


def test_split_is_first_90_percent_train() -> None:
    tokens = np.arange(1000)
    splits = Splits.from_tokens(tokens, 0.1, seq_len=8)
    assert np.array_equal(splits.train, np.arange(900))
    assert np.array_equal(splits.val, np.arange(900, 1000))


def test_batch_targets_are_inputs_shifted_by_one() -> None:
    data = np.arange(10_000, dtype=np.uint16)
    inputs, targets = sample_batch(data, 32, 50, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (32, 50) and inputs.dtype == torch.long
    assert torch.equal(targets[:, :-1], inputs[:, 1:])
    assert torch.equal(targets, inputs + 1)  # data is arange, so windows are contiguous
    assert int(targets.max()) < len(data)


def test_batches_are_reproducible_and_vary() -> None:
    data = np.random.default_rng(1).integers(0, 65, 5000).astype(np.uint8)
    first = sample_batch(data, 8, 16, torch.Generator().manual_seed(3))
    again = sample_batch(data, 8, 16, torch.Generator().manual_seed(3))
    other = sample_batch(data, 8, 16, torch.Generator().manual_seed(4))
    assert torch.equal(first[0], again[0])
    assert not torch.equal(first[0], other[0])


def test_batch_can_reach_the_last_character() -> None:
    data = np.arange(12, dtype=np.uint8)
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        _, targets = sample_batch(data, 4, 5, generator)
        seen.update(targets.flatten().tolist())
    assert 11 in seen and 1 in seen


def test_streams_tile_the_whole_split_in_order() -> None:
    spans = eval_spans(1003, 7)
    assert len(spans) == 7 and spans[0][0] == 0 and spans[-1][1] == 1003
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_bounded_evaluation_is_a_fixed_spread_subset() -> None:
    spans = eval_spans(10_000_000, 16, 1_000_000)
    assert len(spans) == 16 and spans == eval_spans(10_000_000, 16, 1_000_000)
    assert sum(b - a for a, b in spans) == 1_000_000
    assert spans[0][0] == 0 and spans[-1][1] == 10_000_000, "spread over the whole split"
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "disjoint, in order"
    assert eval_spans(500_000, 16, 1_000_000) == eval_spans(500_000, 16), "small: whole split"
    for world in (2, 3, 5):  # ranks take spans[rank::world]: together, the same spans
        shared = sorted(s for rank in range(world) for s in spans[rank::world])
        assert shared == spans


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\xff\xfe\xfa bad", "not valid UTF-8"),
     (b"fine\n" * 10 + b"\xc3(", "byte offset 50"), (b"ends in \xe5\xa4", "ends inside")],
)
def test_bad_corpus_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        scan_corpus(CorpusSource(path))


def test_missing_corpus_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        scan_corpus(CorpusSource(tmp_path / "nope.txt"))


def test_corpus_shorter_than_a_window() -> None:
    with pytest.raises(UsageError, match=r"too short"):
        split_point(50, 0.1, seq_len=64)


def test_token_file_is_reused_rebuilt_when_damaged_and_refused_for_another_corpus(
        tmp_path: Path) -> None:
    text = "to be or not to be\n" * 200
    _, vocab = encode(tmp_path, text)
    run, source = tmp_path / "run", CorpusSource(tmp_path / "corpus.txt")
    sha = hashlib.sha256(text.encode()).hexdigest()
    bin_file = run / "corpus.uint8.bin"
    inode = bin_file.stat().st_ino
    notes: list[str] = []
    assert prepare_tokens(run, source, sha, vocab, notes.append).path.stat().st_ino == inode
    assert notes == [], "a whole token file is reused, not rewritten"

    damaged = bytearray(bin_file.read_bytes())
    damaged[7] ^= 1
    bin_file.write_bytes(bytes(damaged))
    assert find_tokens(run, sha, vocab)[0] is None
    rebuilt = prepare_tokens(run, source, sha, vocab, notes.append)
    assert "damaged" in notes[0] and vocab.decode(np.asarray(rebuilt.open())) == text

    (tmp_path / "corpus.txt").write_text(text.upper())
    with pytest.raises(UsageError, match="differs"):
        prepare_tokens(run, source, sha, vocab, quiet, check_source=True)
    (run / "corpus.json").unlink()
    with pytest.raises(UsageError, match="not the text this run was made from"):
        prepare_tokens(run, source, sha, vocab, quiet)
