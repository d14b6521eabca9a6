"""A corpus file -> compact token ids beside the run: encoded once, then memory-mapped.

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
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from bard_sdk.digest import sha256_stream
from bard_sdk.errors import UnknownCharacterError
from bard_sdk.vocab import Vocabulary, VocabularyBuilder

from .errors import UsageError
from .fsutil import atomic_write_text, atomic_writer
from .records import Fields, dumps, read_json

CHUNK_BYTES = 1 << 20  # small enough that each pass over a piece stays in the CPU cache
BUNDLED_CORPUS = "tinyshakespeare.txt"
TOKENS_RECORD = "corpus.json"
TOKENS_FORMAT = "bard-tokens/1"

Note = Callable[[str], None]


@dataclass(frozen=True)
class CorpusSource:
    """A UTF-8 text file, or (path None) the bundled tinyshakespeare corpus."""

    path: Path | None

    @property
    def name(self) -> str:
        return BUNDLED_CORPUS if self.path is None else self.path.name

    def check(self) -> None:
        if self.path is None:
            return
        if not self.path.exists():
            raise UsageError(f"corpus file not found: {self.path}")
        if not self.path.is_file():
            raise UsageError(f"corpus path is not a file: {self.path}")
        if self.path.stat().st_size == 0:
            raise UsageError(f"corpus file is empty: {self.path}")

    def open(self) -> BinaryIO:
        if self.path is None:
            return io.BytesIO(bundled_corpus_bytes())
        try:
            return self.path.open("rb")
        except OSError as err:
            raise UsageError(f"cannot read corpus file {self.path}: {err}") from None

    def size(self) -> int:
        return len(bundled_corpus_bytes()) if self.path is None else self.path.stat().st_size


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


def utf8_pieces(source: CorpusSource, digest: Any = None) -> Iterator[tuple[bytes, int]]:
    """The file as (piece, byte offset) pairs, each piece ending on a character boundary;
    every byte read is fed to `digest`."""
    carry, offset, chunk = b"", 0, CHUNK_BYTES
    with source.open() as stream:
        while block := stream.read(chunk):
            if digest is not None:
                digest.update(block)
            data = carry + block if carry else block
            cut = complete_length(data)
            yield data[:cut], offset
            carry, offset = data[cut:], offset + cut
    if carry:
        raise UsageError(f"corpus file is not valid UTF-8: {source.name} (byte offset {offset}: "
                         "the file ends inside a character)")


def _utf8_error(source: CorpusSource, offset: int, err: UnicodeDecodeError) -> UsageError:
    return UsageError(f"corpus file is not valid UTF-8: {source.name} "
                      f"(byte offset {offset + err.start})")


@dataclass(frozen=True)
class CorpusScan:
    name: str
    sha256: str
    length: int  # characters
    vocabulary: Vocabulary


def scan_corpus(source: CorpusSource) -> CorpusScan:
    """First pass: sha256, character count and vocabulary, checking the UTF-8 on the way."""
    source.check()
    digest = hashlib.sha256()
    builder = VocabularyBuilder()
    for piece, offset in utf8_pieces(source, digest):
        try:
            builder.feed(piece)
        except UnicodeDecodeError as err:
            raise _utf8_error(source, offset, err) from None
    return CorpusScan(source.name, digest.hexdigest(), builder.characters, builder.vocabulary())


def read_text(path: Path) -> str:
    """A whole text file with a corpus's checks (held-out texts for the model card)."""
    CorpusSource(path).check()
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"file is not valid UTF-8: {path} (byte offset {err.start})") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err}") from None


def hash_corpus(source: CorpusSource) -> str:
    source.check()
    with source.open() as stream:
        return sha256_stream(stream, CHUNK_BYTES)


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
        for piece, offset in utf8_pieces(source, digest):
            try:
                ids = vocab.encode_utf8(piece, dtype)
            except UnicodeDecodeError as err:
                raise _utf8_error(source, offset, err) from None
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
    if source.path is not None and not source.path.is_file():
        raise UsageError(f"{run_dir} needs its token file rebuilt ({why}) but the corpus "
                         f"{source.path} is not there; pass it with --data")
    note(f"rebuilding the token file: {why}")
    return write_tokens(run_dir, source, vocab, corpus_sha256, note)
