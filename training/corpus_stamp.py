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


def stamp_of(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_stamp(run_dir: Path, path: Path | None) -> None:
    """Record the corpus file as it is now (nothing for the bundled corpus)."""
    if path is not None:
        atomic_write_text(run_dir / STAMP_FILE, dumps(stamp_of(path)) + "\n")


def read_stamp(run_dir: Path) -> dict[str, object] | None:
    """The recorded stamp, or None if missing or unreadable (then the corpus is hashed)."""
    try:
        record = parse_json((run_dir / STAMP_FILE).read_text(encoding="utf-8"), STAMP_FILE)
    except (OSError, UnicodeDecodeError, UsageError):
        return None
    return record if isinstance(record, dict) else None


def check_corpus_unchanged(run_dir: Path, path: Path | None, sha256: str) -> None:
    """Refuse to resume on a corpus file that is no longer the text the run was made from.
    A corpus that is not there (moved) is left to the token file, as before."""
    if path is None or not path.is_file():
        return
    now = stamp_of(path)
    recorded = read_stamp(run_dir)
    if recorded is not None and all(recorded.get(k) == now[k] for k in now):
        return
    if hash_corpus(CorpusSource(path)) != sha256:
        raise UsageError(
            f"corpus {path} changed since {run_dir} was made from it (its sha256 differs): "
            "restore the original text to resume, or start a new run on the new text with "
            "another --out")
    write_stamp(run_dir, path)  # touched, not changed: the next resume needs no hash
