"""Resume notices a changed corpus: the corpus file's size and modification time are kept
beside the run (`corpus.stamp.json`); on resume, when either differs, the file is hashed, and
a different sha256 is refused in one line naming the file and what to do.

The run's token file is a copy of the corpus as it was, so without this check an edited
corpus would be ignored silently. Kept apart from the corpus pipeline on purpose: the check
is small and knows only a path and the sha256 the run was made from.
"""

from __future__ import annotations

from pathlib import Path

from .corpus import CorpusSource, hash_corpus
from .errors import UsageError
from .fsutil import atomic_write_text
from .records import dumps, parse_json

STAMP_FILE = "corpus.stamp.json"


def stamp_of(source: CorpusSource) -> dict[str, object]:
    """Each document's path, size and modification time, in the order they are joined."""
    files = []
    for path in source.documents():
        assert path is not None  # the bundled corpus is never stamped
        stat = path.stat()
        files.append({"path": str(path.resolve()), "size": stat.st_size,
                      "mtime_ns": stat.st_mtime_ns})
    return {"files": files}


def write_stamp(run_dir: Path, source: CorpusSource) -> None:
    """Record the corpus files as they are now (nothing for the bundled corpus)."""
    if not source.bundled:
        atomic_write_text(run_dir / STAMP_FILE, dumps(stamp_of(source)) + "\n")


def read_stamp(run_dir: Path) -> dict[str, object] | None:
    """The recorded stamp, or None if missing or unreadable (then the corpus is hashed)."""
    try:
        record = parse_json((run_dir / STAMP_FILE).read_text(encoding="utf-8"), STAMP_FILE)
    except (OSError, UnicodeDecodeError, UsageError):
        return None
    return record if isinstance(record, dict) else None


def check_corpus_unchanged(run_dir: Path, source: CorpusSource, sha256: str) -> None:
    """Refuse to resume on a corpus (a file, or a folder's files) that is no longer the text
    the run was made from. A corpus that is not there (moved) is left to the token file."""
    if source.bundled or not all(p.exists() for p in source.inputs):
        return
    try:
        now = stamp_of(source)
    except UsageError:  # a folder emptied, a file gone: the hash below says what changed
        now = None
    if now is not None and read_stamp(run_dir) == now:
        return
    if now is None or hash_corpus(source) != sha256:
        named = ", ".join(str(p) for p in source.inputs)
        raise UsageError(
            f"corpus {named} changed since {run_dir} was made from it (its sha256 differs): "
            "restore the original text to resume, or start a new run on the new text with "
            "another --out")
    write_stamp(run_dir, source)  # touched, not changed: the next resume needs no hash
