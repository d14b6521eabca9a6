"""A corpus (one file, or many joined) -> compact token ids beside the run: encoded once, then
memory-mapped.

As a Python str, a list of ints and an int64 tensor, text costs ~26 bytes per character; as
uint8/uint16 ids in a memory-mapped file it costs 1-2 bytes on disk and, in memory, only the
pages that batches touch, shared by every DDP rank through the page cache.

Two streaming passes over the file, CHUNK_BYTES at a time, each cut on a character boundary: the
first hashes the bytes, checks the UTF-8 and collects the characters; the second maps them to
ids (bard_sdk's vocabulary, the artifact's own) into a temporary file renamed into place. A
sidecar `corpus.json` ties the token file to the corpus's sha256 and the vocabulary, and holds
the file's crc32, so a resumed run or an export reuses the file, and rebuilds it if it is
missing, damaged or stale (so the file is a cache: written without fsync).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from bard_sdk.errors import UnknownCharacterError
from bard_sdk.vocab import Vocabulary, VocabularyBuilder

from .errors import UsageError
from .fsutil import atomic_write_text, atomic_writer
from .records import Fields, dumps, read_json

CHUNK_BYTES = 1 << 20  # small enough that each pass over a piece stays in the CPU cache
# Between two documents of a corpus: ASCII's record separator, a character no text uses (a
# document holding it is refused), so the model learns it as "a new document starts here" and
# `stop=["\x1e"]` ends a generation where a document would end.
DOCUMENT_SEPARATOR = "\x1e"
SEPARATOR_BYTES = DOCUMENT_SEPARATOR.encode("ascii")
DOCUMENT_ORDER = "sorted by path inside the folder, part by part, in code-point order"
BUNDLED_CORPUS = "tinyshakespeare.txt"
TOKENS_RECORD = "corpus.json"
TOKENS_FORMAT = "bard-tokens/1"

Note = Callable[[str], None]


class CorpusSource:
    """What `--data` named: text files and folders, in the order given (a folder stands for
    its `*.txt` files, recursively, in DOCUMENT_ORDER); nothing names the bundled corpus.

    Several documents are joined with DOCUMENT_SEPARATOR between them, so the model can learn
    where one ends and the next begins; the corpus (its sha256, its token file) is that joined
    text, so a changed, added or removed file changes the corpus. One file is its own bytes."""

    def __init__(self, data: Path | Sequence[Path] | None = None) -> None:
        if data is None:
            self.inputs: tuple[Path, ...] = ()
        elif isinstance(data, (str, Path)):
            self.inputs = (Path(data),)
        else:
            self.inputs = tuple(Path(p) for p in data)
        self._documents: list[Path | None] | None = None

    @property
    def path(self) -> Path | None:
        """The one input, if there is exactly one (file or folder)."""
        return self.inputs[0] if len(self.inputs) == 1 else None

    @property
    def bundled(self) -> bool:
        return not self.inputs

    @property
    def name(self) -> str:
        if self.bundled:
            return BUNDLED_CORPUS
        return " + ".join(p.name + ("/" if p.is_dir() else "") for p in self.inputs)[:4096]

    def missing(self) -> Path | None:
        """The first input that is no longer there (None: all are, or the bundled corpus)."""
        return next((p for p in self.inputs if not p.exists()), None)

    def documents(self) -> list[Path | None]:
        """The files in the order they are joined ([None]: the bundled corpus), each checked
        to exist and hold something."""
        if self._documents is None:
            self._documents = [None] if self.bundled else expand_inputs(self.inputs)
        return self._documents

    def check(self) -> None:
        self.documents()

    def size(self) -> int:
        """Bytes of the joined corpus, separators included."""
        docs = self.documents()
        if docs == [None]:
            return len(bundled_corpus_bytes())
        return sum(p.stat().st_size for p in docs if p is not None) + \
            len(SEPARATOR_BYTES) * (len(docs) - 1)


def expand_inputs(inputs: Sequence[Path]) -> list[Path | None]:
    """Files and folders -> the documents, in order, each listed once and non-empty."""
    found: list[Path | None] = []
    for item in inputs:
        if not item.exists():
            raise UsageError(f"corpus file not found: {item}")
        if item.is_dir():
            files = folder_documents(item)
            if not files:
                raise UsageError(f"corpus folder holds no *.txt files: {item}")
            found.extend(files)
        elif item.is_file():
            found.append(item)
        else:
            raise UsageError(f"corpus path is not a file or a folder: {item}")
    seen: set[Path] = set()
    for path in found:
        assert path is not None
        real = path.resolve()
        if real in seen:
            raise UsageError(f"corpus file is named twice: {path}")
        seen.add(real)
        if path.stat().st_size == 0:
            raise UsageError(f"corpus file is empty: {path}")
    return found


def folder_documents(folder: Path) -> list[Path | None]:
    """A folder's `*.txt` files (any case), recursively, skipping hidden files and folders,
    sorted by their path inside the folder compared part by part in code-point order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, f) for f in files
                  if not f.startswith(".") and f.lower().endswith(".txt")]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


_bundled: list[bytes] = []


def bundled_corpus_bytes() -> bytes:
    """The bundled corpus, decompressed once per process (1.1 MB)."""
    if not _bundled:
        blob = resources.files("bard.training").joinpath("corpus", BUNDLED_CORPUS + ".gz")
        _bundled.append(gzip.decompress(blob.read_bytes()))
    return _bundled[0]


def complete_length(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a multi-byte UTF-8
    character (invalid bytes are left in, for the decoder to report)."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte < 0x80:
            return end
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return end - back if back < need else end
    return end


def open_document(path: Path | None) -> BinaryIO:
    if path is None:
        return io.BytesIO(bundled_corpus_bytes())
    try:
        return path.open("rb")
    except OSError as err:
        raise UsageError(f"cannot read corpus file {path}: {err}") from None


def document_name(path: Path | None) -> str:
    return BUNDLED_CORPUS if path is None else str(path)


def utf8_pieces(path: Path | None, digest: Any = None, joined: bool = False
                ) -> Iterator[tuple[bytes, int]]:
    """One document as (piece, byte offset) pairs, each piece ending on a character boundary;
    every byte read is fed to `digest`. A document `joined` to others is checked for binary
    data and the separator (`check_text_bytes`)."""
    carry, offset, chunk = b"", 0, CHUNK_BYTES
    with open_document(path) as stream:
        while block := stream.read(chunk):
            if digest is not None:
                digest.update(block)
            data = carry + block if carry else block
            cut = complete_length(data)
            check_text_bytes(path, data[:cut], offset, joined)
            yield data[:cut], offset
            carry, offset = data[cut:], offset + cut
    if carry:
        raise UsageError(f"corpus file is not valid UTF-8: {document_name(path)} (byte offset "
                         f"{offset}: the file ends inside a character)")


def check_text_bytes(path: Path | None, piece: bytes, offset: int, joined: bool) -> None:
    """In a corpus of several documents (a folder of files a user did not each look at), a NUL
    byte means a binary file or UTF-16 saved as .txt, and U+001E would move where documents
    meet: both are refused. One file named on its own is taken as the text it is (NULs and
    all: any valid UTF-8 trains)."""
    if not joined:
        return
    refused = [(b"\0", "a NUL byte: a binary file, or not UTF-8 text"),
               (SEPARATOR_BYTES, "the document separator U+001E")]
    for byte, what in refused:
        at = piece.find(byte)
        if at >= 0:
            raise UsageError(f"corpus file is not text bard can train on: "
                             f"{document_name(path)} holds {what} (byte offset {offset + at})")


def corpus_pieces(source: CorpusSource, digest: Any = None
                  ) -> Iterator[tuple[bytes, int, Path | None]]:
    """The joined corpus as (piece, byte offset in its document, document): the documents in
    order, DOCUMENT_SEPARATOR between two (offset -1)."""
    documents = source.documents()
    for index, path in enumerate(documents):
        if index:
            if digest is not None:
                digest.update(SEPARATOR_BYTES)
            yield SEPARATOR_BYTES, -1, None
        for piece, offset in utf8_pieces(path, digest, joined=len(documents) > 1):
            yield piece, offset, path


def _utf8_error(path: Path | None, offset: int, err: UnicodeDecodeError) -> UsageError:
    return UsageError(f"corpus file is not valid UTF-8: {document_name(path)} "
                      f"(byte offset {offset + err.start})")


@dataclass(frozen=True)
class CorpusScan:
    name: str
    sha256: str
    length: int  # characters
    vocabulary: Vocabulary
    documents: tuple[tuple[str, int], ...] = ()  # (file, characters) in the order joined


def scan_corpus(source: CorpusSource) -> CorpusScan:
    """First pass: sha256, character count and vocabulary, checking the UTF-8 on the way."""
    source.check()
    digest = hashlib.sha256()
    builder = VocabularyBuilder()
    lengths: dict[Path | None, int] = {}
    for piece, offset, path in corpus_pieces(source, digest):
        before = builder.characters
        try:
            builder.feed(piece)
        except UnicodeDecodeError as err:
            raise _utf8_error(path, offset, err) from None
        if offset >= 0:
            lengths[path] = lengths.get(path, 0) + builder.characters - before
    documents = tuple((document_name(p), lengths.get(p, 0)) for p in source.documents())
    return CorpusScan(source.name, digest.hexdigest(), builder.characters, builder.vocabulary(),
                      documents)


def describe_split(scan: CorpusScan, val_fraction: float, cut: int) -> str:
    """Where the validation split lies, in the documents' terms (for the log)."""
    if len(scan.documents) <= 1:
        return (f"validation split: the last {val_fraction:.0%} of {scan.name} "
                f"({scan.length - cut:,} characters)")
    start, index = 0, 0
    for index, (_, chars) in enumerate(scan.documents):  # noqa: B007 (index is used after)
        end = start + chars + 1  # the separator after it
        if cut < end:
            break
        start = end
    return (f"{len(scan.documents)} documents joined in order with U+001E between them; "
            f"validation split: the last {val_fraction:.0%} of the joined text "
            f"({scan.length - cut:,} characters), from character {cut - start:,} of "
            f"document {index + 1} ({scan.documents[index][0]}) to the end of the last")


def read_text(path: Path) -> str:
    """A whole text file with a corpus's checks (held-out texts for the model card)."""
    if not path.is_file():
        raise UsageError(f"file not found: {path}" if not path.exists() else
                         f"not a file: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"file is empty: {path}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"file is not valid UTF-8: {path} (byte offset {err.start})") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err}") from None


def hash_corpus(source: CorpusSource) -> str:
    """sha256 of the joined corpus (of the file itself when it is one file)."""
    source.check()
    digest = hashlib.sha256()
    for index, path in enumerate(source.documents()):
        if index:
            digest.update(SEPARATOR_BYTES)
        with open_document(path) as stream:
            while block := stream.read(CHUNK_BYTES):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class TokenFile:
    """The ids of a whole corpus, in order, as little-endian unsigned integers."""

    path: Path
    dtype: np.dtype
    length: int

    def open(self) -> np.ndarray:
        if self.length == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.length,))


def token_dtype(vocab: Vocabulary) -> np.dtype:
    return vocab.id_dtype.newbyteorder("<")


def token_file_name(vocab: Vocabulary) -> str:
    return f"corpus.{vocab.id_dtype.name}.bin"


def file_crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            crc = zlib.crc32(block, crc)
    return crc


def write_tokens(run_dir: Path, source: CorpusSource, vocab: Vocabulary,
                 corpus_sha256: str, note: Note) -> TokenFile:
    """Second pass: encode the corpus into `corpus.<dtype>.bin` and its sidecar, atomically.
    The corpus is hashed again on the way, so a file that changed since the first pass (or is
    not the corpus the run was made from) is refused and nothing is written."""
    source.check()
    dtype = token_dtype(vocab)
    target = run_dir / token_file_name(vocab)
    note(f"encoding {source.name} ({source.size() / 1e6:,.1f} MB) into {target.name}")
    digest, crc, length = hashlib.sha256(), 0, 0
    with atomic_writer(target, durable=False) as out:
        for piece, offset, path in corpus_pieces(source, digest):
            try:
                ids = vocab.encode_utf8(piece, dtype)
            except UnicodeDecodeError as err:
                raise _utf8_error(path, offset, err) from None
            except UnknownCharacterError:
                raise UsageError(f"corpus {source.name} is not the text this run was made from "
                                 "(it has characters outside the run's vocabulary)") from None
            out.write(memoryview(ids))
            crc = zlib.crc32(memoryview(ids), crc)
            length += len(ids)
        if digest.hexdigest() != corpus_sha256:
            raise UsageError(f"corpus {source.name} is not the text this run was made from "
                             "(sha256 differs), or it changed while being encoded")
    record = {"format": TOKENS_FORMAT, "corpus": {"name": source.name, "sha256": corpus_sha256,
                                                  "length": length},
              "file": target.name, "dtype": dtype.name, "crc32": crc,
              "vocabulary": vocab.chars}
    atomic_write_text(run_dir / TOKENS_RECORD, dumps(record, ensure_ascii=False) + "\n")
    return TokenFile(target, dtype, length)


def find_tokens(run_dir: Path, corpus_sha256: str, vocab: Vocabulary) -> tuple[TokenFile | None,
                                                                              str]:
    """The run's token file if it is whole and belongs to this corpus and vocabulary, else
    (None, why not). The sidecar and the file are a cache: damage means 'rebuild'."""
    record_path = run_dir / TOKENS_RECORD
    if not record_path.is_file():
        return None, "no token file yet"
    try:
        record = Fields(read_json(record_path), str(record_path))
        corpus = record.obj("corpus")
        fields = (record.string("format"), corpus.string("sha256"), corpus.integer("length", 0),
                  record.string("file"), record.integer("crc32", 0), record.array("vocabulary"))
    except UsageError as err:
        return None, f"damaged token record ({err})"
    fmt, sha, length, name, crc, chars = fields
    path = run_dir / token_file_name(vocab)
    if fmt != TOKENS_FORMAT or name != path.name:
        return None, "token record of another format"
    if sha != corpus_sha256 or chars != vocab.chars:
        return None, "token file of another corpus or vocabulary"
    dtype = token_dtype(vocab)
    if not path.is_file() or path.stat().st_size != length * dtype.itemsize:
        return None, f"{path.name} is missing or has the wrong size"
    if file_crc32(path) != crc:
        return None, f"{path.name} is damaged (crc32 differs)"
    return TokenFile(path, dtype, length), ""


def prepare_tokens(run_dir: Path, source: CorpusSource, corpus_sha256: str, vocab: Vocabulary,
                   note: Note, check_source: bool = False) -> TokenFile:
    """Reuse the run's token file, or rebuild it from the corpus. With `check_source` (the
    user named the corpus again) the corpus must be the run's even when the file is reused."""
    if check_source and hash_corpus(source) != corpus_sha256:
        raise UsageError(f"corpus {source.name} differs from the one {run_dir} was trained on")
    found, why = find_tokens(run_dir, corpus_sha256, vocab)
    if found is not None:
        return found
    gone = source.missing()
    if gone is not None:
        raise UsageError(f"{run_dir} needs its token file rebuilt ({why}) but the corpus "
                         f"{gone} is not there; pass it with --data")
    note(f"rebuilding the token file: {why}")
    return write_tokens(run_dir, source, vocab, corpus_sha256, note)
