"""``python -m backend download-sam TYPE [--dir DIR]``: fetch an official SAM 1 or SAM 2.1 checkpoint.

TYPE is one of ``backend.segmenters.sam_types.SAM_TYPES`` (their URLs and sha256 are there).

The file is streamed to a temporary file next to the target, its sha256 checked, and only then
renamed into place (atomic on one filesystem), so the target path never holds a partial or
corrupt checkpoint. The server itself never downloads: it reads ``SAM_CHECKPOINT``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import requests

from backend.checksums import sha256_of
from backend.files import write_atomic
from backend.segmenters.sam_types import SAM_TYPES
from backend.settings import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "model_weights"
_CHUNK_BYTES = 1024 * 1024


class DownloadError(Exception):
    """The checkpoint could not be downloaded or did not verify; nothing was written to the target."""


def checkpoint_path(model_type: str, directory: Path = DEFAULT_DIR) -> Path:
    """Where ``download`` puts the ``model_type`` checkpoint."""
    return Path(directory) / SAM_TYPES[model_type].filename


def download(
    model_type: str,
    directory: Path = DEFAULT_DIR,
    timeout_s: float = 60.0,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Path:
    """Download and verify the ``model_type`` checkpoint into ``directory``; return its path.

    A file already there with the right sha256 is kept; one with another sha256 is replaced.
    ``progress(bytes_done, bytes_total)`` is called after every chunk.
    """
    checkpoint = SAM_TYPES[model_type]
    target = checkpoint_path(model_type, directory)
    if target.is_file() and sha256_of(target) == checkpoint.sha256:
        return target

    def stream(out) -> None:
        digest = hashlib.sha256()
        done = 0
        with requests.get(checkpoint.url, stream=True, timeout=timeout_s) as response:
            if response.status_code != 200:
                raise DownloadError(f"{checkpoint.url} answered HTTP {response.status_code}")
            for chunk in response.iter_content(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress(done, checkpoint.size)
        if digest.hexdigest() != checkpoint.sha256:  # raising here discards the file
            raise DownloadError(
                f"{checkpoint.url}: sha256 {digest.hexdigest()} ({done} bytes) does not match the expected "
                f"{checkpoint.sha256} ({checkpoint.size} bytes); the file was discarded"
            )

    try:
        write_atomic(target, stream)
    except requests.RequestException as exc:
        raise DownloadError(f"downloading {checkpoint.url} failed ({type(exc).__name__}: {exc})") from None
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_type", choices=list(SAM_TYPES), help="which SAM model (SAM_MODEL_TYPE)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"target directory (default: {DEFAULT_DIR})")


def run(args: argparse.Namespace) -> int:
    checkpoint = SAM_TYPES[args.model_type]
    print(f"{args.model_type}: {checkpoint.url} ({checkpoint.size / 1e6:.0f} MB) -> {args.dir}", file=sys.stderr)
    last_decile = -1

    def report(done: int, total: int) -> None:
        nonlocal last_decile
        decile = 10 * done // max(total, 1)
        if decile != last_decile:
            print(f"  {10 * decile}%", file=sys.stderr)
            last_decile = decile

    try:
        path = download(args.model_type, args.dir, progress=report)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"verified {path} (sha256 {checkpoint.sha256[:12]}…)", file=sys.stderr)
    print(f"use it with: SAM_MODEL_TYPE={args.model_type} SAM_CHECKPOINT={path.resolve()}")
    return 0
