"""One run of a kind per project at a time, across processes and machines: "project 3's training",
"project 3's pre-annotation". Training and pre-annotation jobs (and ``python -m backend
preannotate``) hold their kind's lock while they work the project, so a second run waits instead
of doing the same work beside the first (two runs storing predictions would store each task twice).

A lock is held by a *holder*, the job id of the run:

- Without REDIS_URL: an ``flock`` on ``<project state dir>/<kind>.lock`` under MODEL_DIR, held by
  one process; the kernel drops it when that process dies. The holder's id is written into the
  file, for "waiting for ..." messages.
- With REDIS_URL (RQ workers, possibly on several machines): the key ``segmentation-backend:<kind>:
  <project>`` holding the holder's id, which expires ``ttl_s`` after it was last refreshed, so a
  run whose processes all died frees it. Every process of the run may hold it at once (an RQ
  pre-annotation job's chunks run in several workers): taking it succeeds when it is free or
  already the holder's. Whoever ends the run releases it; releasing checks the holder, so a late
  process of a run that lost the lock never frees another run's.

Call ``refresh`` at least every ``ttl_s`` seconds while working (a job's heartbeat calls ``keep_alive``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from backend.jobs.store import HEARTBEAT_STALE_S
from backend.project_store import project_id
from backend.redis_connection import redis_client

logger = logging.getLogger(__name__)

WAIT_POLL_S = 0.5

# Take or keep the key when it is free or the holder's own; 1 when held by the holder afterwards.
_TAKE = """
local holder = redis.call('get', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RunLockBusy(Exception):
    """Another run holds the lock (``acquire(blocking=False)``); ``holder`` says which, if known."""

    def __init__(self, holder: str | None):
        super().__init__(f"held by {holder or 'another process'}")
        self.holder = holder


class ProjectRunLock:
    """``kind``'s lock of ``project``, taken for ``holder``. ``directory``: the project's state
    directory under MODEL_DIR (the lock file's place without Redis). ``redis``: REDIS_URL, or an
    open Redis client; empty for the file lock. Use as a context manager (blocks until free) or
    with ``acquire`` / ``release``."""

    def __init__(self, directory: Path, project: str, kind: str, holder: str, redis="",
                 ttl_s: float = HEARTBEAT_STALE_S):
        self.project, self.kind, self.holder = project_id(project), kind, holder
        self._path = Path(directory) / f"{kind}.lock"
        self._key = f"segmentation-backend:{kind}:{self.project}"
        self._ttl_ms = int(ttl_s * 1000)
        self._redis = redis_client(redis) if isinstance(redis, str) and redis else (redis or None)
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> None:
        """Take the lock for ``holder``; raises RunLockBusy when ``blocking`` is False and another
        run holds it."""
        while not self._try():
            if not blocking:
                raise RunLockBusy(self.current_holder())
            time.sleep(WAIT_POLL_S)

    def refresh(self) -> bool:
        """Keep the Redis lock from expiring; False when it is no longer the holder's (it expired
        and another run took it). Always True for the file lock, which cannot expire."""
        return self._redis is None or self._try()

    def keep_alive(self) -> None:
        """``refresh`` for a job's heartbeat: a lock lost is logged (the run goes on; another may start)."""
        if not self.refresh():
            logger.warning("%s of project %s (%s) lost its run lock: it expired; another run may start", self.kind,
                           self.project, self.holder)

    def release(self) -> None:
        """Free the lock if ``holder`` holds it (from any process of the run)."""
        if self._redis is not None:
            self._redis.eval(_RELEASE, 1, self._key, self.holder)
        elif self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def current_holder(self) -> str | None:
        """Who holds the lock now (a holder id), None when it is free."""
        if self._redis is not None:
            value = self._redis.get(self._key)
            return None if value is None else value.decode(errors="replace")
        if self._fd is not None:
            return self.holder
        try:
            with open(self._path, "rb") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return handle.read(200).decode(errors="replace").strip()
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                return None
        except FileNotFoundError:
            return None

    def __enter__(self) -> "ProjectRunLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _try(self) -> bool:
        if self._redis is not None:
            return bool(self._redis.eval(_TAKE, 1, self._key, self.holder, self._ttl_ms))
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.holder.encode(), 0)
        self._fd = fd
        return True

