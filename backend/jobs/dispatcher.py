"""The dispatcher: in one process per MODEL_DIR, a background thread that about twice a second reaps
dead jobs (failed, with their type's ``on_lost`` hook told, or requeued to resume), lets each feature queue the work that is due (its hooks:
retraining turns settled pending annotations into training jobs), lets the executor start and watch
jobs, and prunes old ended ones.

Which process dispatches is decided by a non-blocking flock on ``dispatcher.lock``; the others retry
now and then, so one takes over if the holder exits.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Sequence

from backend.files import LockBusy, file_lock
from backend.process_thread import ProcessThread
from backend.jobs.executors import Executor
from backend.jobs.store import QUEUED, Job, JobStore
from backend.jobs.types import known_type, load

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
LEADER_RETRY_S = 5.0


class Dispatcher:
    """``due_work``: callables run every round that queue the jobs now due (they raise to skip a round)."""

    def __init__(self, jobs: JobStore, executor: Executor, due_work: Sequence[Callable[[], None]] = (), settings=None):
        self.jobs, self.executor, self.settings = jobs, executor, settings
        self._due_work = list(due_work)
        self._stop = threading.Event()
        self._thread = ProcessThread(self._run, "job-dispatcher")

    def tick(self) -> None:
        """One round: reap dead jobs, queue due work, advance the executor, prune."""
        for job in self.jobs.reap_dead():
            if job.state == QUEUED:  # a resumable job: back in the queue
                logger.warning("%s job %s lost its process; resuming it: %s", job.kind, job.id, job.progress.get("message"))
                self.executor.submit(job)
            else:
                logger.warning("%s job %s failed: %s", job.kind, job.id, job.error)
                self._tell_lost(job)
        for queue_due in self._due_work:
            queue_due()
        self.executor.poll()
        self.jobs.prune()

    def _tell_lost(self, job: Job) -> None:
        """The job type's ``on_lost`` hook for a job whose process died; its failure is only logged."""
        hook = getattr(known_type(job.type), "on_lost", None)
        if hook is None or self.settings is None:
            return
        try:
            load(hook)(self.settings, job)
        except Exception:  # a hook never stops dispatching
            logger.exception("%s job %s: reporting its lost process failed", job.kind, job.id)

    def start(self) -> None:
        """Start the dispatcher thread in this process (idempotent; safe after fork)."""
        if not self._thread.is_alive():
            self._stop.clear()
            self._thread.ensure_running()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with file_lock(self.jobs.layout.dispatcher_lock, blocking=False):
                    logger.info("process %s dispatches jobs for %s", os.getpid(), self.jobs.layout.root.parent)
                    while not self._stop.wait(POLL_INTERVAL_S):
                        try:
                            self.tick()
                        except Exception:  # keep dispatching; a later round may succeed
                            logger.exception("job dispatcher round failed; retrying in %.0f s", LEADER_RETRY_S)
                            self._stop.wait(LEADER_RETRY_S)
            except LockBusy:
                self._stop.wait(LEADER_RETRY_S)
