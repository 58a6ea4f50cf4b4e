"""One training job per project at a time, across processes and machines.

Embedded mode: an ``flock`` on ``projects/<id>/train.lock`` under MODEL_DIR; the kernel drops it
when the holder dies. With REDIS_URL (RQ workers possibly on several machines): a Redis lock that
expires unless the holder refreshes it (the job's heartbeat does), so a killed worker frees it.
"""

from __future__ import annotations

import contextlib

from backend.files import file_lock
from backend.jobs.store import HEARTBEAT_STALE_S
from backend.active_learning.layout import Layout
from backend.project_store import project_id


class TrainingLock:
    """Context manager; blocks until the project is free. Call ``refresh`` at least every
    HEARTBEAT_STALE_S seconds while holding it."""

    def __init__(self, layout: Layout, project: str, redis_url: str = ""):
        self.project = project_id(project)
        self._path = layout.train_lock(self.project)
        self._redis_url = redis_url
        self._held = contextlib.ExitStack()
        self._redis_lock = None

    def __enter__(self) -> "TrainingLock":
        if self._redis_url:
            from backend.redis_connection import redis_client

            client = redis_client(self._redis_url)
            self._redis_lock = client.lock(
                f"segmentation-backend:train:{self.project}", timeout=HEARTBEAT_STALE_S, sleep=0.5, thread_local=False
            )
            self._redis_lock.acquire(blocking=True)
            self._held.callback(self._redis_lock.release)
        else:
            self._held.enter_context(file_lock(self._path))
        return self

    def refresh(self) -> None:
        if self._redis_lock is not None:
            self._redis_lock.reacquire()

    def __exit__(self, *exc_info) -> None:
        self._held.close()
        self._redis_lock = None
