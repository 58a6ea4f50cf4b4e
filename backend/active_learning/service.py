"""The retraining loop and background jobs as the web app sees it.

``ActiveLearning`` is the app's webhook event sink (``handle``), its source of job and version
listings, the one place pre-annotation jobs are requested (``request_preannotation``; ``TASKS_CREATED``
goes through ``tasks_created``), and — in one process per MODEL_DIR — the dispatcher: a background
thread that, about twice a second, reaps dead jobs (failed, or requeued to resume), turns settled
pending annotations into jobs and lets the executor start them. Which process dispatches is decided by a non-blocking flock on
``dispatcher.lock``; the others retry now and then, so one takes over if the holder exits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from backend.active_learning.events import EventError, PendingStore, parse_event, project_of
from backend.files import LockBusy, file_lock
from backend.active_learning.jobs import QUEUED, Job, JobStore
from backend.active_learning.layout import Layout
from backend.active_learning.queue import Executor, make_executor
from backend.active_learning.serving import ProjectModels
from backend.active_learning.versions import VersionRegistry
from backend.preannotation.trigger import request_preannotation
from backend.project_options import ProjectOptions
from backend.project_store import ProjectStore

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
LEADER_RETRY_S = 5.0


class ActiveLearning:
    """``event_log``: another sink that also gets every event (e.g. the JSONL audit log)."""

    def __init__(self, settings, executor: Executor | None = None, event_log=None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.layout = Layout(settings.model_dir)
        self.pending = PendingStore(self.layout)
        self.jobs = JobStore(self.layout)
        self.registry = VersionRegistry.from_settings(settings)
        self.projects = ProjectStore.in_model_dir(settings.model_dir)
        self.executor = executor if executor is not None else make_executor(settings, self.jobs)
        self._event_log = event_log
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None

    # -- webhook ----------------------------------------------------------------------------------

    def handle(self, action: str, payload: dict) -> dict:
        """Record one webhook event (no Label Studio calls: milliseconds). START_TRAINING queues a job
        at once and answers its id. Raises EventError for a malformed training event."""
        if self._event_log is not None:
            self._event_log.handle(action, payload)
        if action == "TASKS_CREATED":
            return self.tasks_created(payload)
        effect = parse_event(action, payload)
        if effect is None:
            return {"training": "ignored"}
        pending = self.pending.record(effect, self._clock())
        answer = {"training": "recorded", "project": effect.project, "new_annotations": len(pending.annotation_ids)}
        if effect.force:
            job = self.dispatch(effect.project)
            if job is not None:
                answer["job"] = job.id
        return answer

    def tasks_created(self, payload: dict) -> dict:
        """An import (``TASKS_CREATED``), pre-annotation's side (``SegmentationModel.fit`` also hands
        the event to embedding ahead): with ``preannotate_on_import`` on for the project, a
        pre-annotation job is queued for the new tasks (or the project's queued one takes them on).
        Raises EventError for a malformed payload."""
        project = project_of(payload)
        setup = self.projects.load(project)
        if not ProjectOptions.for_project(self.settings.default_options, setup).preannotate_on_import:
            return {"preannotation": "off"}
        tasks = payload.get("tasks")
        ids = [t["id"] for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), int)] if isinstance(tasks, list) else []
        if not ids:
            raise EventError("TASKS_CREATED without a 'tasks' list of objects with an integer 'id'")
        job, merged = self.request_preannotation(project, f"TASKS_CREATED ({len(ids)} tasks)", tasks=ids)
        return {"preannotation": job.id, "merged": merged}

    def request_preannotation(self, project: str, trigger: str, tasks=(), scope: str | None = None) -> tuple[Job, bool]:
        """Queue pre-annotation of ``tasks`` and/or a ``scope`` of the project's tasks ("unlabeled",
        "all"); see ``backend.preannotation.trigger``."""
        return request_preannotation(self.jobs, self.executor, project, trigger, tasks, scope)

    # -- dispatching ------------------------------------------------------------------------------

    def dispatch(self, project: str) -> Job | None:
        """Queue a job for ``project`` if its pending changes call for one; returns it. A job already
        queued for the project absorbs the changes (it reads all annotations when it starts)."""
        chosen: list[Job] = []

        def queue_job(decision) -> None:
            queued = [job for job in self.jobs.list(project) if job.state == QUEUED]
            if queued:
                chosen.append(queued[-1])
                return
            job = self.jobs.create(project, decision.reason)
            try:
                self.executor.submit(job)
            except Exception:  # e.g. Redis down: no job, and the pending changes stay for the next try
                self.jobs.delete(job.id)
                raise
            logger.info("queued training job %s for project %s: %s", job.id, job.project, decision.reason)
            chosen.append(job)

        self.pending.take(project, self._clock(), self.settings.train_min_new_annotations,
                          self.settings.train_debounce_s, queue_job)
        return chosen[0] if chosen else None

    def tick(self) -> None:
        """One dispatcher round: reap dead jobs, queue due jobs, advance the executor."""
        for job in self.jobs.reap_dead():
            if job.state == QUEUED:  # a resumable job: back in the queue
                logger.warning("%s job %s lost its process; resuming it: %s", job.kind, job.id, job.progress.get("message"))
                self.executor.submit(job)
            else:
                logger.warning("%s job %s failed: %s", job.kind, job.id, job.error)
        for project in self.pending.projects_with_changes():
            self.dispatch(project)
        self.executor.poll()
        self.jobs.prune()

    def start(self) -> None:
        """Start the dispatcher thread in this process (idempotent; safe after fork)."""
        if self._thread is not None and self._thread_pid == os.getpid() and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread_pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="training-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread_pid == os.getpid():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with file_lock(self.layout.dispatcher_lock, blocking=False):
                    logger.info("process %s dispatches training jobs for %s", os.getpid(), self.settings.model_dir)
                    while not self._stop.wait(POLL_INTERVAL_S):
                        try:
                            self.tick()
                        except Exception:  # keep dispatching; a later round may succeed
                            logger.exception("training dispatcher round failed; retrying in %.0f s", LEADER_RETRY_S)
                            self._stop.wait(LEADER_RETRY_S)
            except LockBusy:
                self._stop.wait(LEADER_RETRY_S)

    # -- serving ----------------------------------------------------------------------------------

    def project_models(self, default_segmenter) -> ProjectModels:
        """Per-project extreme-point segmenters for the app; ``default_segmenter`` serves the default
        weights (already loaded at start-up), other versions load lazily on this process's device."""
        return ProjectModels.for_settings(self.settings, default_segmenter, self.registry)

    # -- listings ---------------------------------------------------------------------------------

    def job_list(self, project: str | None = None) -> list[dict]:
        return [job.to_json() for job in self.jobs.list(project)]
