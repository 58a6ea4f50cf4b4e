"""The retraining loop's webhook sink and its turn in the dispatcher.

``handle`` records annotation events as pending changes of their project (no Label Studio calls:
milliseconds); START_TRAINING queues a job at once and answers its id. ``queue_due``, called by the
dispatcher (``backend.jobs.dispatcher``) about twice a second, turns settled pending changes into
training jobs.

Only projects that sent ``/setup`` to this backend are trained (Label Studio calls it whenever a
model is connected): annotation events and START_TRAINING for any other project are answered
``{"training": "not connected"}`` and change nothing, so the open webhook cannot make a job read a
project this backend was never connected to with its token.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from backend.active_learning.events import MAX_EVENT_ANNOTATIONS, PendingStore, parse_event
from backend.active_learning.layout import Layout
from backend.jobs.executors import Executor
from backend.jobs.store import QUEUED, Job, JobStore
from backend.jobs.types import TRAIN
from backend.project_store import ProjectStore
from backend.webhooks import TASKS_CREATED, WebhookEvent

logger = logging.getLogger(__name__)


class Retraining:
    def __init__(self, settings, jobs: JobStore, executor: Executor, clock: Callable[[], float] = time.time):
        self.settings, self.jobs, self.executor = settings, jobs, executor
        self.pending = PendingStore(Layout(settings.model_dir))
        self.projects = ProjectStore.in_model_dir(settings.model_dir)
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
        if self.projects.load(effect.project) is None:
            logger.info("%s for project %s, which sent no /setup to this backend: nothing recorded",
                        event.action, effect.project)
            return {"training": "not connected"}
        if effect.unlisted or effect.dropped:
            logger.info("%s for project %s lists %d annotations more than the %d read: %s", event.action,
                        effect.project, effect.unlisted + effect.dropped, MAX_EVENT_ANNOTATIONS,
                        "counted as new" if effect.unlisted else "not removed from the pending ones")
        pending = self.pending.record(effect, self._clock())
        answer = {"training": "recorded", "project": effect.project, "new_annotations": pending.count}
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
        """The dispatcher's round: a job for every project whose pending changes have settled. Changes
        of a project without ``/setup`` (recorded before only connected projects were) are dropped."""
        for project in self.pending.projects_with_changes():
            if self.projects.load(project) is None:
                self.pending.clear(project)
                logger.info("pending changes of project %s, which sent no /setup to this backend, dropped", project)
            else:
                self.dispatch(project)
