"""The embedding store on disk (the default): one file per embedding under ``MODEL_DIR/embeddings``,
bounded in bytes, least recently used first out.

Every gunicorn worker, replica (sharing ``MODEL_DIR``) and restarted backend sees the same files.
A file's modification time is its last use (reads touch it), so the LRU order is shared too.
Entries are written to a temporary file and renamed into place: a reader sees a whole entry or
none. The per-key computation lock is an ``flock`` on a lock file, released by the kernel when its
holder dies, so a crashed process never leaves an image locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from backend.files import file_lock, write_atomic

logger = logging.getLogger(__name__)

_SUFFIX = ".emb"
_COUNTERS = struct.Struct("<qq")  # hits, misses
_USAGE_TTL_S = 2.0  # /health may ask often; a directory scan is reused this long
_STALE_TMP_S = 3600.0  # a temporary file this old was left by a killed writer


class DiskEmbeddingStore:
    """Bytes per key under ``root``; at most ``max_bytes`` in all. Thread- and process-safe."""

    kind = "disk"

    def __init__(self, root: Path, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
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

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` (atomically), then evict least recently used entries beyond ``max_bytes``."""
        write_atomic(self._path(key), data, durable=False)  # a lost entry is computed again
        self._evict()

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

    def record(self, hit: bool) -> None:
        """Count one lookup in the hit/miss counters every process shares."""
        with file_lock(self.root / "counters.lock"):
            fd = os.open(self.root / "counters", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                raw = os.pread(fd, _COUNTERS.size, 0)
                hits, misses = _COUNTERS.unpack(raw) if len(raw) == _COUNTERS.size else (0, 0)
                os.pwrite(fd, _COUNTERS.pack(hits + hit, misses + (not hit)), 0)
            finally:
                os.close(fd)

    def stats(self) -> dict:
        """bytes, entries, max_bytes, hits, misses (every process's lookups since the store was made)."""
        size, entries = self._usage_now()
        try:
            raw = (self.root / "counters").read_bytes()
            hits, misses = _COUNTERS.unpack(raw) if len(raw) == _COUNTERS.size else (0, 0)
        except FileNotFoundError:
            hits = misses = 0
        return {"bytes": size, "entries": entries, "max_bytes": self.max_bytes, "hits": hits, "misses": misses}

    def _usage_now(self) -> tuple[int, int]:
        with self._usage_lock:
            if self._usage is not None and time.monotonic() - self._usage[0] < _USAGE_TTL_S:
                return self._usage[1], self._usage[2]
        files = self._scan()
        usage = (sum(size for _, size, _ in files), len(files))
        with self._usage_lock:
            self._usage = (time.monotonic(), *usage)
        return usage

    def _evict(self) -> None:
        with file_lock(self.root / "evict.lock"):
            files = sorted(self._scan())  # oldest use first
            total = sum(size for _, size, _ in files)
            for _, size, path in files:
                if total <= self.max_bytes:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    logger.debug("embedding store: evicted %s (%d bytes)", path.name, size)
                total -= size
        with self._usage_lock:
            self._usage = None

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


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
