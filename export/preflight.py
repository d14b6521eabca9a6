"""What `bard export` checks before its long work: where it may write, who else is writing
there, and the small input files it reads at the end.

Export never destroys what it did not create: `--out` may not be, contain, or lie inside the
run directory, and may not be or contain the current directory or the home directory; an
existing `--out` is replaced (with `--force`) only when it holds a bard artifact and nothing
else. Two exports to one `--out` are serialised by a lock file beside it: the second one fails
at once with a one-line error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import bard_sdk
from bard.training.errors import UsageError
from bard_sdk.manifest import MANIFEST_FILE
from bard_sdk.schema import manifest_schema

ARTIFACT_EXTRAS = {MANIFEST_FILE, "README.md", "loss_curve.png"}  # besides the model files


def _protected(run_dir: Path) -> list[tuple[str, Path]]:
    places = [("the run directory", run_dir), ("the current directory", Path.cwd())]
    with contextlib.suppress(RuntimeError, KeyError):  # no HOME and no passwd entry
        places.append(("your home directory", Path.home()))
    return [(what, place.resolve()) for what, place in places]


def not_an_artifact(directory: Path) -> str | None:
    """Why `directory` is not a bard artifact that export may replace, or None if it is one:
    a valid bard manifest and only the files an export writes, all plain files."""
    try:
        manifest = bard_sdk.read_manifest(directory)
    except bard_sdk.ArtifactError:
        return f"no valid bard {MANIFEST_FILE}"
    expected = ARTIFACT_EXTRAS | {manifest.file(v).path for v in manifest.variants()}
    foreign = sorted(entry.name for entry in os.scandir(directory)
                     if entry.name not in expected or not entry.is_file(follow_symlinks=False))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        return f"it holds files bard did not write: {shown}"
    return None


def check_output_dir(out: Path, run_dir: Path, force: bool) -> Path:
    """Refuse every `--out` that could lose a file bard did not write; create its parent.
    Returns the absolute output path."""
    if out.is_symlink():
        raise UsageError(f"--out {out} is a symbolic link; give the real directory")
    target = out.resolve()
    for what, place in _protected(run_dir):
        if target == place:
            raise UsageError(f"--out {out} is {what}; choose a new directory for the artifact")
        if place.is_relative_to(target):
            raise UsageError(f"--out {out} contains {what} ({place}); choose a new directory")
    run = _protected(run_dir)[0][1]
    if target.is_relative_to(run):
        raise UsageError(f"--out {out} lies inside the run directory {run}; choose a directory "
                         "outside it")
    if os.path.lexists(target):
        if not target.is_dir():
            raise UsageError(f"--out {out} is an existing file; export writes a directory and "
                             "replaces only an artifact directory it wrote")
        problem = not_an_artifact(target)
        if problem:
            raise UsageError(f"--out {out} exists and is not a bard artifact ({problem}); "
                             "choose another --out")
        if not force:
            raise UsageError(f"output directory exists: {out} (pass --force to replace it)")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"output path is not writable: {parent} ({err.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output path is not writable: {parent}")
    return target


def check_replaceable(final: Path) -> None:
    """Called just before an existing `final` is replaced: it must still be an artifact."""
    problem = None if final.is_dir() and not final.is_symlink() else "not a directory"
    problem = problem or not_an_artifact(final)
    if problem:
        raise UsageError(f"{final} changed during the export and is no longer a bard artifact "
                         f"({problem}); nothing was replaced")


@contextlib.contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on `target` for one export, or fail at once if another export
    holds it. flock: a killed export releases it; the file is removed when the export ends."""
    lock = target.parent / f".{target.name}.bard-export.lock"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise UsageError(f"cannot create the export lock {lock}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            current = os.stat(lock, follow_symlinks=False)
            if os.fstat(fd).st_ino == current.st_ino and stat.S_ISREG(current.st_mode):
                break  # the lock file we hold is the one at `lock`
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            raise UsageError(f"another bard export is writing {target} right now (lock "
                             f"{lock}); wait for it to finish") from None
        os.close(fd)  # a finishing export removed the file we locked: try again
    else:
        raise UsageError(f"could not lock {lock}; another export keeps replacing it")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def read_card_notes(path: Path | None) -> str:
    """`--card-notes`, read before the export work so a bad file fails fast."""
    return "" if path is None else read_option_text(path, "--card-notes")


def read_option_text(path: Path, option: str) -> str:
    """A UTF-8 file an option names; a missing, irregular or undecodable one is a UsageError."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise UsageError(f"{option} {path} is not a regular file")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{option} file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"{option} file is not valid UTF-8: {path} "
                         f"(byte offset {err.start})") from None
    except OSError as err:
        raise UsageError(f"cannot read {option} {path}: {err.strerror}") from None


def check_readable_files(paths: list[Path], option: str) -> None:
    for path in paths:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise UsageError(f"{option} file not found: {path}") from None
        except OSError as err:
            raise UsageError(f"cannot read {option} {path}: {err.strerror}") from None
        if not stat.S_ISREG(mode):
            raise UsageError(f"{option} {path} is not a regular file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"cannot read {option} {path}: permission denied")


def check_name(name: str) -> None:
    """The model name goes into the manifest, whose schema bounds it."""
    limit = manifest_schema()["properties"]["name"]["maxLength"]
    if not 1 <= len(name) <= limit:
        raise UsageError(f"the model name must be 1 to {limit} characters (--name), got "
                         f"{len(name)}")
    if not name.isprintable():
        raise UsageError(f"the model name {name!r} holds control characters (--name)")
