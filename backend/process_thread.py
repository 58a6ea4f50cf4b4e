"""A daemon thread that belongs to one process and is started again in a forked child.

gunicorn forks its workers from a master that may have built the app (``preload_app``), and a fork
copies objects but not their threads: a thread started in the master is gone in every worker, while
the object still holds its ``threading.Thread``. ``ProcessThread`` remembers which process started
its thread, so ``ensure_running()`` in a child (or after the thread ended) starts a new one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class ProcessThread:
    """``target`` on a daemon thread named ``name``, at most one running per process. Thread-safe."""

    def __init__(self, target: Callable[[], None], name: str):
        self._target = target
        self.name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def ensure_running(self) -> bool:
        """Start the thread unless this process's one is running; True when it started one now."""
        with self._lock:
            if self._running_here():
                return False
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
            self._thread.start()
            return True

    def is_alive(self) -> bool:
        """Whether this process's thread is running (a thread of the parent process is not)."""
        with self._lock:
            return self._running_here()

    def join(self, timeout: float | None = None) -> None:
        """Wait for this process's thread to end (no-op when it has none)."""
        with self._lock:
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _running_here(self) -> bool:
        return self._thread is not None and self._pid == os.getpid() and self._thread.is_alive()
