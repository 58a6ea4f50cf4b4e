"""The embedding store on disk (the default): one file per embedding under ``MODEL_DIR/embeddings``,
bounded in bytes, least recently used first out.

Every gunicorn worker, replica (sharing ``MODEL_DIR``) and restarted backend sees the same files.
A file's modification time is its last use (reads touch it), so the LRU order is shared too.
Entries are written to a temporary file and renamed into place: a reader sees a whole entry or
none. Writing stops short of the disk: the store evicts its own entries to leave ``min_free_bytes``
free on the file system, and skips an entry (counted, shown in ``stats``) that would not fit even
then or that meets a full disk (ENOSPC): the embedding is served anyway, only not kept. The per-key
computation lock is an ``flock`` on a lock file, released by the kernel when its
holder dies, so a crashed process never leaves an image locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from backend.files import file_lock, write_atomic

logger = logging.getLogger(__name__)

_SUFFIX = ".emb"
COUNTERS = ("hits", "misses", "waits", "bad_entries", "writes_skipped")  # see EmbeddingCache
_COUNTERS = struct.Struct("<" + "q" * len(COUNTERS))  # a shorter file (older backend) reads as zeros beyond
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_USAGE_TTL_S = 2.0  # /health may ask often; a directory scan is reused this long
_STALE_TMP_S = 3600.0  # a temporary file this old was left by a killed writer


class DiskEmbeddingStore:
    """Bytes per key under ``root``; at most ``max_bytes`` in all, and never below ``min_free_bytes``
    free on the disk. Thread- and process-safe."""

    kind = "disk"

    def __init__(self, root: Path, max_bytes: int, min_free_bytes: int = 0):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._entries = self.root / "entries"
        self._locks = self.root / "locks"
        for folder in (self._entries, self._locks):
            folder.mkdir(parents=True, exist_ok=True)
        self._usage: tuple[float, int, int] | None = None  # (time.monotonic(), bytes, entries)
        self._usage_lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile: the bytes read are still whole
            os.utime(path)
        return data

    def contains(self, key: str) -> bool:
        return self._path(key).is_file()

    def put(self, key: str, data: bytes) -> bool:
        """Store ``data`` (atomically) and evict least recently used entries beyond ``max_bytes``;
        False (nothing stored) when it would leave less than ``min_free_bytes`` free on the disk
        even without older entries, or when the disk is full."""
        if not self._make_room(len(data)):
            return False
        try:
            write_atomic(self._path(key), data, durable=False)  # a lost entry is computed again
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            logger.warning("embedding store: the disk under %s is full; this embedding is not stored", self.root)
            return False
        self._evict()
        return True

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()
        with self._usage_lock:
            self._usage = None

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Held while this process computes ``key``; other processes asking for it wait here."""
        path = self._locks / f"{_digest(key)}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed that lock file after we opened it: lock the new one
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still locked, so lock files do not pile up
            os.close(fd)

    def count(self, counter: str) -> None:
        """Add one to ``counter`` (one of ``COUNTERS``), shared by every process."""
        index = COUNTERS.index(counter)
        with file_lock(self.root / "counters.lock"):
            fd = os.open(self.root / "counters", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                counts = _unpack_counters(os.pread(fd, _COUNTERS.size, 0))
                counts[index] += 1
                os.pwrite(fd, _COUNTERS.pack(*counts), 0)
            finally:
                os.close(fd)

    def stats(self) -> dict:
        """bytes, entries, max_bytes, the disk's free bytes and the floor, and ``COUNTERS`` (every
        process's since the store was made); ``writing`` says whether new entries are kept."""
        size, entries = self._usage_now()
        try:
            counts = _unpack_counters((self.root / "counters").read_bytes())
        except FileNotFoundError:
            counts = [0] * len(COUNTERS)
        free = shutil.disk_usage(self._entries).free
        writing = "yes" if free + size > self.min_free_bytes else "no: the disk is below EMBEDDING_STORE_MIN_FREE_BYTES"
        return {"bytes": size, "entries": entries, "max_bytes": self.max_bytes, "disk_free_bytes": free,
                "min_free_bytes": self.min_free_bytes, "writing": writing, **dict(zip(COUNTERS, counts))}

    def _usage_now(self) -> tuple[int, int]:
        with self._usage_lock:
            if self._usage is not None and time.monotonic() - self._usage[0] < _USAGE_TTL_S:
                return self._usage[1], self._usage[2]
        files = self._scan()
        usage = (sum(size for _, size, _ in files), len(files))
        with self._usage_lock:
            self._usage = (time.monotonic(), *usage)
        return usage

    def _make_room(self, size: int) -> bool:
        """Whether ``size`` more bytes leave ``min_free_bytes`` free on the disk, after evicting as
        many least recently used entries as that takes (all of them, if need be)."""
        short = self.min_free_bytes + size - shutil.disk_usage(self._entries).free
        return short <= 0 or self._evict(free_at_least=short)

    def _evict(self, free_at_least: int = 0) -> bool:
        """Evict least recently used entries until the store is within ``max_bytes`` and this call
        freed ``free_at_least`` bytes; False if even evicting every entry frees less."""
        freed = 0
        with file_lock(self.root / "evict.lock"):
            files = sorted(self._scan())  # oldest use first
            total = sum(size for _, size, _ in files)
            if total < free_at_least:  # evicting would not be enough: keep what there is
                return False
            for _, size, path in files:
                if total <= self.max_bytes and freed >= free_at_least:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    logger.debug("embedding store: evicted %s (%d bytes)", path.name, size)
                total -= size
                freed += size
        with self._usage_lock:
            self._usage = None
        return freed >= free_at_least

    def _scan(self) -> list[tuple[int, int, Path]]:
        """(mtime ns, size, path) of every entry; removes temporary files killed writers left."""
        files = []
        stale_before = time.time() - _STALE_TMP_S
        with os.scandir(self._entries) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    if entry.name.endswith(_SUFFIX):
                        files.append((stat.st_mtime_ns, stat.st_size, Path(entry.path)))
                    elif entry.name.endswith(".tmp") and stat.st_mtime < stale_before:
                        os.unlink(entry.path)
        return files

    def _path(self, key: str) -> Path:
        return self._entries / f"{_digest(key)}{_SUFFIX}"


def _unpack_counters(raw: bytes) -> list[int]:
    raw = raw[:_COUNTERS.size].ljust(_COUNTERS.size, b"\0")
    return list(_COUNTERS.unpack(raw))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
