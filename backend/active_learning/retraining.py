"""The retraining loop's webhook sink and its turn in the dispatcher.

``handle`` records annotation events as pending changes of their project (no Label Studio calls:
milliseconds); START_TRAINING queues a job at once and answers its id. ``queue_due``, called by the
dispatcher (``backend.jobs.dispatcher``) about twice a second, turns settled pending changes into
training jobs.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from backend.active_learning.events import PendingStore, parse_event
from backend.active_learning.layout import Layout
from backend.jobs.executors import Executor
from backend.jobs.store import QUEUED, Job, JobStore
from backend.jobs.types import TRAIN
from backend.webhooks import TASKS_CREATED, WebhookEvent

logger = logging.getLogger(__name__)


class Retraining:
    def __init__(self, settings, jobs: JobStore, executor: Executor, clock: Callable[[], float] = time.time):
        self.settings, self.jobs, self.executor = settings, jobs, executor
        self.pending = PendingStore(Layout(settings.model_dir))
        self._clock = clock

    def wants(self, action: str) -> bool:
        """Every event but imports (whose answer has said nothing of training since imports began
        pre-annotation)."""
        return action != TASKS_CREATED

    def handle(self, event: WebhookEvent) -> dict:
        """Record one event's training effect; raises EventError for a malformed training event."""
        effect = parse_event(event.action, event.payload)
        if effect is None:
            return {"training": "ignored"}
        pending = self.pending.record(effect, self._clock())
        answer = {"training": "recorded", "project": effect.project, "new_annotations": len(pending.annotation_ids)}
        if effect.force:
            job = self.dispatch(effect.project)
            if job is not None:
                answer["job"] = job.id
        return answer

    def dispatch(self, project: str) -> Job | None:
        """Queue a job for ``project`` if its pending changes call for one; returns it. A job already
        queued for the project absorbs the changes (it reads all annotations when it starts)."""
        chosen: list[Job] = []

        def queue_job(decision) -> None:
            queued = [job for job in self.jobs.list(project) if job.state == QUEUED and job.type == TRAIN]
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

    def queue_due(self) -> None:
        """The dispatcher's round: a job for every project whose pending changes have settled."""
        for project in self.pending.projects_with_changes():
            self.dispatch(project)
