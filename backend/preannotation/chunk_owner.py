"""Which process works an RQ chunk of a pre-annotation job, on disk beside the job's outcomes, so the
dispatcher sees at once that a chunk's worker died — RQ itself notices only when its worker's
registration expires, minutes later.

    MODEL_DIR/active_learning/projects/<id>/jobs/<job id>/owner-<n>.json   {"host", "pid", "at"}

The owner (the RQ work horse running the chunk) writes the file when it takes the chunk, restamps
``at`` every ``OWNER_BEAT_S`` from a thread, and removes it when done. A chunk's owner is dead when
it ran on this host and its pid is gone, or its stamp is older than ``OWNER_STALE_S`` (another host:
killed, powered off, cut off from the shared MODEL_DIR).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from backend.files import read_json, write_atomic
from backend.jobs.store import pid_alive

OWNER_BEAT_S = 5.0
OWNER_STALE_S = 60.0


def owner_file(directory: Path, chunk: int) -> Path:
    return directory / f"owner-{chunk:05d}.json"


class ChunkOwner:
    """``with ChunkOwner(directory, chunk):`` — this process works the chunk meanwhile."""

    def __init__(self, directory: Path, chunk: int):
        self.path = owner_file(directory, chunk)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"chunk-owner-{chunk}", daemon=True)

    def __enter__(self) -> "ChunkOwner":
        self._stamp()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _stamp(self) -> None:
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}
        write_atomic(self.path, json.dumps(owner).encode(), durable=False)  # restamped in seconds anyway

    def _beat(self) -> None:
        while not self._stop.wait(OWNER_BEAT_S):
            try:
                self._stamp()
            except OSError:  # a missed beat; the next may succeed (stale only after OWNER_STALE_S)
                pass


def dead_owner(directory: Path, chunk: int, now: float | None = None) -> str | None:
    """Why the process that took ``chunk`` cannot be working it any more, or None (alive, or no
    owner recorded: not taken yet, or done)."""
    owner = read_json(owner_file(directory, chunk))
    if not isinstance(owner, dict):
        return None
    now = time.time() if now is None else now
    host, pid, at = owner.get("host"), owner.get("pid"), owner.get("at")
    if host == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
        return f"its worker (pid {pid}) died"
    if isinstance(at, (int, float)) and now - at > OWNER_STALE_S:
        return f"its worker on {host} (pid {pid}) has not been heard of for {now - at:.0f} s"
    return None
