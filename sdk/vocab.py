"""Characters <-> ids, with an explicit policy for characters the model never saw.

The vocabulary is part of the artifact contract and exists once, here: the trainer builds it
from a corpus, the exporter writes it into the manifest, the SDK reads it back. Encoding is one
lookup in a dense table indexed by code point, so a prompt and a 1 GB corpus cost the same per
character (no Python loop per character).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np

from .errors import ArtifactError, InvalidArgumentError, UnknownCharacterError

OnUnknown = Literal["error", "skip", "replace"]
UNKNOWN = -1  # the lookup table's entry for a code point outside the vocabulary
MAX_CODE_POINT = 0x10FFFF
HIGH_BYTES = bytes(range(0x80, 0x100))
DENSE = 4  # a piece with more than 1/DENSE non-ASCII bytes is decoded whole


def code_points(text: str) -> np.ndarray:
    """The code points of `text` in one vectorised step: uint8 for ASCII, else uint32."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _utf32(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _non_ascii(piece: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """The piece as bytes, and the positions of its non-ASCII bytes (None if there are so many
    that decoding the whole piece is cheaper)."""
    data = np.frombuffer(piece, dtype=np.uint8)
    high = data >= 0x80
    if np.count_nonzero(high) * DENSE > len(piece):
        return data, None
    return data, np.flatnonzero(high)


def _sparse_utf8(piece: bytes, data: np.ndarray,
                 high: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """The non-ASCII characters of mostly-ASCII UTF-8 `piece` (`high`: the positions of its
    non-ASCII bytes): (those characters, the byte positions where each starts, the positions
    of the other bytes of multi-byte characters). Valid UTF-8 is exactly: every maximal run of
    non-ASCII bytes is valid on its own; the runs' concatenation decodes and each run starts
    with a lead byte if and only if that holds, so the ASCII bulk is never decoded."""
    run_starts = high[np.concatenate(([True], np.diff(high) != 1))]
    try:
        text = data[high].tobytes().decode("utf-8")
        valid = bool((data[run_starts] >= 0xC0).all())
    except UnicodeDecodeError:
        valid = False
    if not valid:
        piece.decode("utf-8")  # raises, with the exact position
        raise AssertionError("UTF-8 check disagrees with the codec")  # pragma: no cover
    is_lead = data[high] >= 0xC0
    return text, high[is_lead], high[~is_lead]


def _drop(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """`values` without the given sorted positions; few positions: copy the runs between them
    (a boolean mask over the whole array costs more than the copy)."""
    if len(positions) * 64 > len(values):
        return np.delete(values, positions)
    bounds = np.concatenate(([-1], positions, [len(values)]))
    return np.concatenate([values[a + 1 : b] for a, b in itertools.pairwise(bounds)])


def id_dtype(size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id of a `size`-character vocabulary."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ArtifactError(f"a vocabulary of {size} characters is too large")


class VocabularyBuilder:
    """The characters of UTF-8 text fed piece by piece (a corpus of any size), counted and
    collected without a Python loop per character. Each piece must end on a character
    boundary; invalid UTF-8 raises UnicodeDecodeError as `bytes.decode` does."""

    def __init__(self) -> None:
        self.characters = 0
        self._seen = np.zeros(MAX_CODE_POINT + 1, dtype=bool)
        self._ascii_seen = bytearray()  # deleted from each piece: what is left is new

    def feed(self, piece: bytes) -> None:
        if piece.isascii():
            self.characters += len(piece)
            self._note_ascii(piece)
            return
        data, high = _non_ascii(piece)
        if high is None:
            points = _utf32(piece.decode("utf-8"))
            self.characters += len(points)
            self._seen[points] = True
            return
        text, _, tails = _sparse_utf8(piece, data, high)
        self.characters += len(piece) - len(tails)
        self._note_ascii(piece)
        self._seen[_utf32(text)] = True

    def _note_ascii(self, piece: bytes) -> None:
        new = piece.translate(None, bytes(self._ascii_seen) + HIGH_BYTES)
        if new:  # rare after the first piece: most characters have been seen
            fresh = np.flatnonzero(np.bincount(np.frombuffer(new, dtype=np.uint8)))
            self._ascii_seen.extend(fresh.tolist())
            self._seen[fresh] = True

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_code_points(np.flatnonzero(self._seen))


class Vocabulary:
    """A manifest's vocabulary: character id = index."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = list(chars)
        if any(not isinstance(ch, str) or len(ch) != 1 for ch in self.chars):
            raise ArtifactError("vocabulary entries must be single characters")
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise ArtifactError("vocabulary has repeated characters")
        self.code_points = np.array([ord(ch) for ch in self.chars], dtype=np.uint32)
        self._table: np.ndarray | None = None
        self._bytes_table: bytes | None = None

    @classmethod
    def from_code_points(cls, points: Iterable[int] | np.ndarray) -> Vocabulary:
        """The sorted set of the given code points (the order a corpus's vocabulary uses)."""
        array = points if isinstance(points, np.ndarray) else np.fromiter(points, np.int64)
        return cls(chr(int(p)) for p in np.unique(array))

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls.from_code_points(np.unique(code_points(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: object) -> bool:
        return ch in self.index

    @property
    def id_dtype(self) -> np.dtype:
        return id_dtype(len(self))

    def _lookup_table(self) -> np.ndarray:
        """int32 id per code point up to the largest one in the vocabulary (at least 0..255,
        so uint8 code points need no bounds check), UNKNOWN elsewhere; the last entry is
        UNKNOWN and catches every larger code point."""
        if self._table is None:
            top = max(int(self.code_points.max(initial=0)) + 1, 256)
            table = np.full(top + 1, UNKNOWN, dtype=np.int32)
            table[self.code_points] = np.arange(len(self), dtype=np.int32)
            self._table = table
        return self._table

    def lookup(self, points: np.ndarray) -> np.ndarray:
        """int32 ids of an array of code points; UNKNOWN where a character is not in the
        vocabulary."""
        table = self._lookup_table()
        if points.dtype == np.uint8:
            return table[points]
        return np.take(table, points, mode="clip")  # the last entry, UNKNOWN, catches the rest

    def encode_utf8(self, piece: bytes, dtype: np.dtype | type | None = None) -> np.ndarray:
        """Ids of UTF-8 text that ends on a character boundary, as `dtype` (default: the
        smallest that fits), without decoding the ASCII bulk. Invalid UTF-8 raises
        UnicodeDecodeError; a character outside the vocabulary, UnknownCharacterError."""
        dtype = np.dtype(dtype or self.id_dtype)
        if piece.isascii():
            return self._ascii_ids(piece).astype(dtype)
        data, high = _non_ascii(piece)
        if high is None:
            text = piece.decode("utf-8")
            return self._checked(self.lookup(_utf32(text)), text.__getitem__).astype(dtype)
        text, heads, tails = _sparse_utf8(piece, data, high)
        ids = self._ascii_ids(piece).astype(dtype)
        ids[heads] = self._checked(self.lookup(_utf32(text)), text.__getitem__)
        return _drop(ids, tails)

    def _ascii_ids(self, piece: bytes) -> np.ndarray:
        """Per-byte ids of the ASCII characters (bytes >= 0x80 get a placeholder 0)."""
        table = self._byte_table()
        if table is None:  # ASCII ids beyond one byte: an unsorted vocabulary
            data = np.frombuffer(piece, dtype=np.uint8)
            ascii_ids = self.lookup(np.where(data < 0x80, data, 0).astype(np.uint8))
            return self._checked(np.where(data < 0x80, ascii_ids, 0), lambda i: chr(piece[i]))
        mapped = piece.translate(table)
        if b"\xff" in mapped:
            position = mapped.index(b"\xff")
            raise UnknownCharacterError([(len(piece[:position].decode("utf-8", "replace")),
                                          chr(piece[position]))], 1)
        return np.frombuffer(mapped, dtype=np.uint8)

    def _byte_table(self) -> bytes | None:
        """bytes.translate table: ASCII byte -> its id (0xFF if unknown); None if an ASCII
        character's id does not fit below 0xFF (only in an unsorted vocabulary)."""
        if self._bytes_table is None:
            ids = self.lookup(np.arange(0x80, dtype=np.uint8))
            if ids.max(initial=0) >= 0xFF:
                return None
            self._bytes_table = bytes(np.where(ids < 0, 0xFF, ids).astype(np.uint8)) + bytes(0x80)
        return self._bytes_table

    @staticmethod
    def _checked(ids: np.ndarray, char_at: Callable[[int], str]) -> np.ndarray:
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            raise UnknownCharacterError([(int(p), char_at(int(p))) for p in unknown[:10]],
                                        int(unknown.size))
        return ids

    def encode(self, text: str, on_unknown: OnUnknown = "error",
               replacement: str | None = None) -> np.ndarray:
        """Ids of `text` as int64; unknown characters raise, are skipped, or are replaced."""
        if on_unknown not in ("error", "skip", "replace"):
            raise InvalidArgumentError(
                f"on_unknown must be 'error', 'skip' or 'replace', got {on_unknown!r}")
        replacement_id = UNKNOWN
        if on_unknown == "replace":
            if not isinstance(replacement, str) or replacement not in self.index:
                raise InvalidArgumentError(
                    f"on_unknown='replace' needs a replacement character from the vocabulary, "
                    f"got {replacement!r}")
            replacement_id = self.index[replacement]
        ids = self.lookup(code_points(text)).astype(np.int64)
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            if on_unknown == "error":
                raise UnknownCharacterError([(int(p), text[p]) for p in unknown[:10]],
                                            int(unknown.size))
            if on_unknown == "skip":
                return ids[ids >= 0]
            ids[unknown] = replacement_id
        return ids

    def decode(self, ids: np.ndarray | list[int]) -> str:
        points = self.code_points[np.asarray(ids, dtype=np.int64)].astype("<u4", copy=False)
        return points.tobytes().decode("utf-32-le", "surrogatepass")
