"""sha256 of a file, read in chunks (weights, checkpoints and published model versions are large)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(path: Path) -> str:
    """A short id of a large file's content that is cheap to take: sha256 of its size, first and
    last MiB. Tells apart checkpoints of one architecture (fine-tuned weights) without reading
    gigabytes at start-up; files equal in those parts are taken as equal."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        digest.update(str(size).encode())
        handle.seek(0)
        digest.update(handle.read(_CHUNK_BYTES))
        handle.seek(max(0, size - _CHUNK_BYTES))
        digest.update(handle.read(_CHUNK_BYTES))
    return digest.hexdigest()[:16]
