"""Atomic writes: a file a user keeps is written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file handle under a temporary name beside `path`, renamed onto `path` when
    the block ends without error (and removed when it does not). `durable=False` skips the
    fsync, for a cache whose readers verify it anyway."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets, not for models
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(final: Path, *, replace: bool = False,
                     check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `final`; rename it into place on success.

    On any error (or a kill) the temporary directory is removed or left under a hidden name,
    and `final` is untouched. With `replace`, an existing directory `final` (approved by
    `check` just before) is renamed aside under a fresh hidden name, the new one renamed in,
    and only then the old one removed; a file or link at `final` is never replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if os.path.lexists(final):
            if not replace or final.is_symlink() or not final.is_dir():
                raise FileExistsError(f"{final} already exists")
            if check is not None:
                check(final)
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old)  # onto the fresh empty directory: nobody else's name
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
