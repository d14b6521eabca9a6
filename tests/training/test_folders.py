"""Many files as one corpus: a folder's *.txt in a stated order, several --data, the separator,
a hash over every file, and a changed folder noticed on resume and export."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from bard.training.corpus import (
    DOCUMENT_SEPARATOR,
    CorpusSource,
    describe_split,
    hash_corpus,
    prepare_tokens,
    scan_corpus,
    write_tokens,
)
from bard.training.errors import UsageError


def quiet(_: str) -> None:
    pass


def make_folder(root: Path) -> dict[str, str]:
    """Files in an order that neither creation time nor a naive sort would give."""
    texts = {"b/a.txt": "in a folder b\n", "a.txt": "first, by name\n", "B.TXT": "upper case\n",
             "b/c/deep.txt": "two folders down\n", "ab.txt": "after a.txt, before b/\n"}
    for name, text in reversed(texts.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / ".hidden.txt").write_text("skipped\n")
    (root / ".git").mkdir()
    (root / ".git" / "x.txt").write_text("skipped\n")
    (root / "notes.md").write_text("not a .txt file\n")
    return texts


def test_folder_order_separator_and_hash(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    texts = make_folder(folder)
    source = CorpusSource(folder)
    order = ["B.TXT", "a.txt", "ab.txt", "b/a.txt", "b/c/deep.txt"]  # code-point order, per part
    assert [str(p.relative_to(folder)) for p in source.documents()] == order
    joined = DOCUMENT_SEPARATOR.join(texts[name] for name in order)
    scan = scan_corpus(source)
    assert scan.sha256 == hashlib.sha256(joined.encode()).hexdigest() == hash_corpus(source)
    assert scan.length == len(joined) and DOCUMENT_SEPARATOR in scan.vocabulary.chars
    assert [chars for _, chars in scan.documents] == [len(texts[n]) for n in order]
    tokens = write_tokens(tmp_path / "run", source, scan.vocabulary, scan.sha256, quiet)
    assert scan.vocabulary.decode(np.asarray(tokens.open())) == joined
    cut = int(len(joined) * 0.9)
    said = describe_split(scan, 0.1, cut)
    assert "5 documents" in said and "document 5 (" in said and "deep.txt" in said


def test_several_data_arguments_join_in_the_order_given(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    texts = make_folder(folder)
    single = tmp_path / "z.txt"
    single.write_text("given first\n")
    source = CorpusSource([single, folder / "b"])
    assert [p.name for p in source.documents()] == ["z.txt", "a.txt", "deep.txt"]
    joined = DOCUMENT_SEPARATOR.join(["given first\n", texts["b/a.txt"], texts["b/c/deep.txt"]])
    assert hash_corpus(source) == hashlib.sha256(joined.encode()).hexdigest()
    with pytest.raises(UsageError, match="named twice"):
        CorpusSource([folder, folder / "a.txt"]).check()


def test_one_file_keeps_its_own_hash(tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("plain\x1etext may use U+001E when it is the only document\n")
    assert hash_corpus(CorpusSource(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hash_corpus(CorpusSource([path])) == hash_corpus(CorpusSource(path))


@pytest.mark.parametrize("change", ["edit", "add", "remove", "rename"])
def test_a_changed_folder_is_noticed(tmp_path: Path, change: str) -> None:
    folder = tmp_path / "docs"
    make_folder(folder)
    scan = scan_corpus(CorpusSource(folder))
    run = tmp_path / "run"
    write_tokens(run, CorpusSource(folder), scan.vocabulary, scan.sha256, quiet)
    if change == "edit":
        (folder / "b" / "a.txt").write_text("in a folder b!\n")
    elif change == "add":
        (folder / "c.txt").write_text("in a folder b\n")
    elif change == "remove":
        (folder / "ab.txt").unlink()
    else:  # same bytes, another place in the order
        (folder / "ab.txt").rename(folder / "zz.txt")
    assert hash_corpus(CorpusSource(folder)) != scan.sha256
    with pytest.raises(UsageError, match="differs from the one"):
        prepare_tokens(run, CorpusSource(folder), scan.sha256, scan.vocabulary, quiet,
                       check_source=True)


@pytest.mark.parametrize(
    ("files", "message"),
    [({}, "holds no *.txt files"),
     ({"a.txt": b"text\n", "b.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}, "NUL byte"),
     ({"a.txt": b"text\n", "b.txt": b""}, "empty"),
     ({"a.txt": b"one\x1etwo\n", "b.txt": b"text\n"}, "document separator"),
     ({"a.txt": b"ok\n", "b.txt": b"caf\xc3"}, "ends inside a character")],
)
def test_bad_folders(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        scan_corpus(CorpusSource(folder))
    if files:
        assert "b.txt" in str(caught.value) or "a.txt" in str(caught.value), "names the file"
