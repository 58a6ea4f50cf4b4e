"""What every job process does around its body, whatever the job's type: SIGTERM becomes ``Stopped``
(for the body to end or pause the job), a ``Heartbeat`` thread shows the process lives, errors end
the job as failed with a reason (``failures_recorded``), and ``ProgressWriter`` writes progress to
the job file at most once a second.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from typing import Callable, Iterator

from backend.jobs.store import HEARTBEAT_INTERVAL_S, JobStore

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 1.0


class Stopped(BaseException):
    """SIGTERM arrived (backend or worker shutdown): the job ends (or pauses) instead of vanishing."""


class ProgressWriter:
    """Writes a job's progress ({"stage", "fraction", "message", ...}) to its job file, at most once
    per ``PROGRESS_WRITE_INTERVAL_S`` unless forced (a stage's end, a pause, the last count)."""

    def __init__(self, jobs: JobStore, job_id: str):
        self._jobs, self._job_id, self._written_at = jobs, job_id, float("-inf")

    def __call__(self, progress: dict | Callable[[], dict], force: bool = False) -> None:
        """``progress``: the value, or a function making it (called only when it is written)."""
        now = time.monotonic()
        if force or now - self._written_at >= PROGRESS_WRITE_INTERVAL_S:
            self._written_at = now
            self._jobs.heartbeat(self._job_id, progress() if callable(progress) else progress)


class Heartbeat:
    """A daemon thread stamping the job's heartbeat, and calling ``keep_alive`` (e.g. refreshing a
    Redis lock the job holds) at each beat."""

    def __init__(self, jobs: JobStore, job_id: str):
        self._jobs, self._job_id = jobs, job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)
        self.keep_alive: Callable[[], None] | None = None

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self._jobs.heartbeat(self._job_id)
                if self.keep_alive is not None:
                    self.keep_alive()
            except Exception:  # a missed beat is not fatal; the next one may succeed
                logger.warning("heartbeat of job %s failed", self._job_id, exc_info=True)


@contextlib.contextmanager
def failures_recorded(jobs: JobStore, job_id: str, expected_errors: tuple) -> Iterator[None]:
    """The body of a job process: SIGTERM becomes ``Stopped`` inside (for the body to handle), and any
    error ends the job as failed: with its message for ``expected_errors`` (written for users), with
    its type and a logged traceback otherwise. Nothing is raised."""
    previous_sigterm = raise_on_sigterm()
    try:
        yield
    except expected_errors as exc:
        jobs.fail(job_id, str(exc))
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        jobs.fail(job_id, f"{type(exc).__name__}: {str(exc)[:500]}")
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def raise_on_sigterm():
    """Turn SIGTERM into Stopped (main thread only; returns the previous handler, or None)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise Stopped()

    return signal.signal(signal.SIGTERM, stop)
