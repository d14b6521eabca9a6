"""sha256, the one digest bard writes and checks (artifacts, checkpoints, corpora)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

BLOCK_BYTES = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: BinaryIO, block: int = BLOCK_BYTES) -> str:
    """The digest of everything left in a binary stream, read `block` bytes at a time."""
    digest = hashlib.sha256()
    while piece := stream.read(block):
        digest.update(piece)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_stream(handle)
