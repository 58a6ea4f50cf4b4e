"""Small file primitives every piece of state under ``MODEL_DIR`` (and every downloaded or trained
weights file) is written with: atomic writes, JSON, checksums and advisory locks. A file is replaced
atomically (write a temporary sibling, fsync, rename), so a reader never sees half a file and a
killed writer leaves the previous content in place."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from backend.checksums import sha256_of


def write_atomic(path: Path, write: Callable[[IO], None] | bytes, text: bool = False, durable: bool = True) -> None:
    """Replace ``path`` atomically with what ``write(handle)`` writes (or with these bytes), readable
    by everyone (workers of other users and hosts share ``MODEL_DIR``). If ``write`` raises, the
    temporary file is removed and ``path`` keeps its old content. ``durable``: fsync before the
    rename, so a power loss cannot leave an empty file (a cache that can recompute skips it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600
        with os.fdopen(fd, "w" if text else "wb") as handle:
            if isinstance(write, bytes):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # includes Ctrl-C: never leave a temporary file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, value: object, indent: int = 1) -> None:
    """Replace ``path`` with ``value`` as JSON, atomically (readers see the old or the new file)."""
    def dump(handle) -> None:
        json.dump(value, handle, indent=indent, sort_keys=True)
        handle.write("\n")

    write_atomic(path, dump, text=True)


def read_json(path: Path, default: object = None) -> object:
    """The JSON in ``path``, or ``default`` when the file does not exist."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


def sha256_of_files(directory: Path) -> dict[str, str]:
    """{relative path: sha256} of every regular file under ``directory``."""
    return {
        str(path.relative_to(directory)): sha256_of(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


class LockBusy(Exception):
    """A non-blocking lock is held by another process."""


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the duration of the block.

    The kernel releases it when the holding process dies, so a killed job never leaves a stale lock.
    Raises LockBusy when ``blocking`` is False and another process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(str(path)) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the file system is out of space (or the user's quota is spent)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
