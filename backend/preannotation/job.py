"""The body of a pre-annotation job: read the project's tasks from Label Studio, turn the rectangles
and keypoints in their predictions and annotations (and, with the project option ``proposals``, the
objects its proposal model finds) into brush masks — through the batch /predict
path (``SegmentationModel.batch_prediction``), so a job stores exactly what "Retrieve predictions"
would — and store each task's masks as a prediction with the project's model version.

One run per project at a time: a job (and ``python -m backend preannotate``) works a project only
while it holds the project's pre-annotation run lock (``backend.jobs.run_lock``, kind
"preannotation"); a second run waits until the first ends, then finds its tasks predicted.

Per task, storing is idempotent: a task that already holds a prediction of the project's version
is skipped (Label Studio's "Retrieve predictions" skips it too), and the task's predictions are
read again right before storing, so one stored a moment ago by anyone is not stored twice. After
storing, this backend's own older predictions on the task are deleted — only those it recorded
storing, never a newer version's or one holding prompts (``owned_predictions.py``); one already
gone (404) is no failure. Every task's outcome goes to disk (``progress.JobTasks``) before the
next starts: a job resumes where it stopped, and one bad task is recorded with its error and
never stops the job.

A task fails only for an answer about that task (Label Studio's 400 or 404, an image that is not an
image, no usable prompt). Label Studio being down (unreachable, timed out, 5xx, 429 after the client's
retries; or its image downloads failing so) is not about a task: the job waits with a capped,
jittered backoff (``backend.jobs.backoff``; its progress says "waiting for Label Studio (…),
retrying in N s") and then tries the same task again — a mask already computed is stored then,
not computed again. Planning and reading the project's config wait the same way.

``run_preannotation_job`` works a whole job in one process (the embedded worker, the CLI); with
REDIS_URL the job is split into chunks that RQ workers share (``chunks.py``), each worked by
``JobRun.work``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Protocol

from backend.active_learning.ls_data import ProjectDataError
from backend.components import Components
from backend.jobs.backoff import Backoff
from backend.jobs.layout import JobLayout
from backend.jobs.lifecycle import Heartbeat, ProgressWriter, Stopped, failures_recorded
from backend.jobs.run_lock import ProjectRunLock, RunLockBusy
from backend.jobs.store import FINISHED, RUNNING, Job, JobStore, outcome_summary
from backend.label_studio_client import LabelStudioError
from backend.labeling import LabelingError
from backend.model import ProjectContext, RequestError, SegmentationModel
from backend.preannotation.ls_tasks import LabelStudioTasks
from backend.preannotation.owned_predictions import OwnedPredictions, superseded
from backend.preannotation.progress import ALREADY_PREDICTED, FAILED, NO_PROMPTS, PREDICTED, JobTasks
from backend.routing import has_prompt_regions

logger = logging.getLogger(__name__)

# Errors that fail the whole job (the project cannot be read); their messages are written for users.
JOB_ERRORS = (ProjectDataError, RequestError, LabelingError)
LOCK_KIND = "preannotation"
# A run waiting for the project's other run checks this often whether it may start.
WAIT_POLL_S = 1.0
PAUSED_FOR_TRAINING = "paused for a queued training job; resumes after it"


def run_lock(layout: JobLayout, job: Job, redis) -> ProjectRunLock:
    """``job``'s project's pre-annotation run lock, taken for the job: ``projects/<id>/preannotation.lock``,
    or with Redis (``redis``: REDIS_URL or a client) the key ``segmentation-backend:preannotation:<id>``."""
    return ProjectRunLock(layout.project_dir(job.project), job.project, LOCK_KIND, job.id, redis)


class Cancelled(Exception):
    """``DELETE /jobs/<id>`` asked the job to stop: it does, at a task boundary."""


class LabelStudioDown(Exception):
    """Label Studio did not answer now (``LabelStudioError.transient`` / ``ImageError.transient``):
    the job waits and tries again. ``computed``: the task's (prediction entry, notes) when its mask
    was computed before storing it failed, to store after the outage instead of computing again."""

    def __init__(self, reason: str, computed: tuple[dict, str] | None = None):
        super().__init__(reason)
        self.computed = computed


def serving_model(settings, threads: int | None = None) -> SegmentationModel:
    """The model a web worker serves (the configured segmenters, each project's extreme-point
    version), built in a job's own process; ``threads`` bounds torch's threads first."""
    return Components(settings).job_model(threads)


def job_threads(settings) -> int:
    """Torch threads of a job run in the background: PREANNOTATE_THREADS, else half the cores."""
    return settings.preannotate_threads if settings.preannotate_threads > 0 else max(1, (os.cpu_count() or 2) // 2)


class Progress(Protocol):
    """Told about a job's progress in this process (the CLI's progress bar)."""

    def planned(self, total: int, done: int) -> None: ...

    def task_done(self, outcome: str) -> None: ...

    def waiting(self, message: str) -> None: ...


class NoProgress:
    def planned(self, total: int, done: int) -> None:
        pass

    def task_done(self, outcome: str) -> None:
        pass

    def waiting(self, message: str) -> None:
        pass


class JobRun:
    """One process's part of a job: plan it (once), work chunks, report progress, finish it."""

    def __init__(self, settings, jobs: JobStore, job: Job, tasks_api=None, progress: Progress | None = None):
        self.settings, self.jobs, self.job = settings, jobs, job
        self.tasks = JobTasks(jobs.layout, job.project, job.id)
        self.owned = OwnedPredictions(jobs.layout.project_dir(job.project))
        self._api = tasks_api
        self._progress = progress or NoProgress()
        self._context: ProjectContext | None = None
        self._write_progress = ProgressWriter(jobs, job.id)

    @property
    def api(self):
        if self._api is None:
            self._api = LabelStudioTasks(self.settings)
        return self._api

    def plan(self) -> list[list[int]]:
        """The job's chunks of task ids: planned before (a resumed job), or now from its params."""
        chunks = self.tasks.chunks()
        if chunks is None:
            ids = list(self.job.params.get("tasks") or [])
            scope = self.job.params.get("scope")
            if scope is not None:
                self.jobs.heartbeat(self.job.id, {"stage": "planning", "fraction": 0.0,
                                                  "message": f"listing project {self.job.project}'s {scope} tasks"})
                ids += self.patiently(lambda: self.api.task_ids(self.job.project, unlabeled_only=scope == "unlabeled"))
            chunks = self.tasks.plan(ids, self.settings.preannotate_chunk_tasks, self.settings.preannotate_max_tasks,
                                     left_out=self.job.params.get("over_cap", 0))
            if self.tasks.not_planned():
                logger.warning("pre-annotation job %s: %d tasks over PREANNOTATE_MAX_TASKS (%d) not planned; "
                               "queue them in another job", self.job.id, self.tasks.not_planned(),
                               self.settings.preannotate_max_tasks)
        self.report(force=True)
        pending = sum(len(self.tasks.pending(chunk)) for chunk in range(len(chunks)))
        total = sum(len(chunk) for chunk in chunks)
        self._progress.planned(total, total - pending)
        return chunks

    def work(self, chunk: int, model: SegmentationModel, lock: ProjectRunLock | None = None) -> None:
        """Pre-annotate the tasks of ``chunk`` that have no outcome yet (refreshing the project's
        run ``lock`` after each, when given)."""
        context = self.project_context(model)
        for task_id in self.tasks.pending(chunk):
            self.stop_if_cancelled()
            outcome, message = self.preannotate(model, context, task_id)
            if outcome == FAILED:
                logger.warning("pre-annotation job %s: task %s failed: %s", self.job.id, task_id, message)
            self.tasks.record(chunk, task_id, outcome, message)
            self._progress.task_done(outcome)
            self.report()
            if lock is not None:
                lock.keep_alive()
        self.report(force=True)

    def preannotate(self, model: SegmentationModel, context: ProjectContext, task_id: int) -> tuple[str, str]:
        """``preannotate_task``, tried again after Label Studio comes back; a mask computed before an
        outage is stored, not computed again."""
        computed = None

        def attempt() -> tuple[str, str]:
            nonlocal computed
            try:
                return preannotate_task(model, context, self.api, self.job.project, task_id, self.owned, computed)
            except LabelStudioDown as down:
                computed = down.computed or computed
                raise

        return self.patiently(attempt)

    def patiently(self, call):
        """``call()``, waiting out Label Studio outages (``LabelStudioDown``, transient client errors)
        with a capped, jittered backoff, as long as they last; the job's progress says so."""
        backoff = Backoff()
        while True:
            try:
                return call()
            except LabelStudioError as exc:
                if not exc.transient:
                    raise
                reason = str(exc)
            except LabelStudioDown as down:
                reason = str(down)
            self.wait_for_label_studio(reason, backoff.next_wait())

    def wait_for_label_studio(self, reason: str, wait_s: float) -> None:
        message = f"waiting for Label Studio ({reason[:300]}), retrying in {wait_s:.0f} s"
        logger.warning("pre-annotation job %s: %s", self.job.id, message)
        self._progress.waiting(message)
        self.report(force=True, stage="waiting", message=message)
        time.sleep(wait_s)
        self.stop_if_cancelled()

    def stop_if_cancelled(self) -> None:
        """Raise ``Cancelled`` when the job was cancelled (or ended) meanwhile: a task boundary."""
        job = self.jobs.get(self.job.id)
        if job.state != RUNNING or job.cancel_requested_at is not None:
            raise Cancelled()

    def cancelled(self) -> None:
        """End the job as cancelled, with the counts of the work it did."""
        self.report(force=True)
        job = self.jobs.end_cancelled(self.job.id, self.counts(self.tasks.summary(since=time.time())))
        logger.info("%s job %s for project %s %s", job.kind, job.id, job.project, outcome_summary(job))

    def counts(self, summary: dict) -> dict:
        version = self._context.version if self._context is not None else self.job.progress.get("model_version")
        counts = {key: summary[key] for key in ("total", PREDICTED, ALREADY_PREDICTED, NO_PROMPTS, FAILED)}
        over = {"not_planned": summary["not_planned"]} if summary["not_planned"] else {}
        return {**counts, **over, "model_version": version}

    def wait_for_the_project(self, lock: ProjectRunLock, yield_to_first: bool = False) -> bool:
        """Take the project's run ``lock`` for this job, waiting while another run holds it (the
        job's progress says which). False when, with ``yield_to_first``, a training job was
        queued meanwhile and the job paused for it instead."""
        told = None
        while True:
            try:
                lock.acquire(blocking=False)
                return True
            except RunLockBusy as busy:
                message = (f"waiting for {busy.holder or 'another process'}, the project's other pre-annotation run, "
                           "to end")
            if message != told:
                told = message
                self._write_progress({"stage": "waiting", "fraction": 0.0, "message": message}, force=True)
                self._progress.waiting(message)
            self.stop_if_cancelled()
            if yield_to_first and self.jobs.first_queued(self.job):
                self.jobs.pause(self.job.id, PAUSED_FOR_TRAINING)
                return False
            time.sleep(WAIT_POLL_S)

    def project_context(self, model: SegmentationModel) -> ProjectContext:
        """The project's config, policies, segmenters and version: from its /setup, else (a project
        never connected to this backend) the labeling config read from Label Studio."""
        if self._context is None:
            stored = model.store.load(self.job.project)
            label_config = None if stored is not None else self.patiently(lambda: self.api.label_config(self.job.project))
            self._context = model.project_context(self.job.project, label_config)
        return self._context

    def report(self, force: bool = False, stage: str = "pre-annotating", message: str | None = None) -> None:
        """Write the progress summary to the job file (at most once a second unless ``force``)."""

        def progress() -> dict:
            summary = self.tasks.summary(since=self.job.started_at or time.time())
            version = {"model_version": self._context.version} if self._context is not None else {}
            shown = {"message": message} if message else {}
            return {"stage": stage, **summary, **version, **shown}

        self._write_progress(progress, force)

    def finish_if_complete(self) -> bool:
        """Mark the job finished once every task has an outcome (whichever process gets there first)."""
        if not self.tasks.complete():
            return False
        summary = self.tasks.summary(since=self.job.started_at or time.time())
        ended = []  # whether this process finished it (logged once)

        def change(job: Job) -> None:
            if job.state == RUNNING:
                job.state, job.finished_at, job.result = FINISHED, time.time(), self.counts(summary)
                job.progress = {"stage": "done", **summary, "model_version": job.result["model_version"]}
                ended.append(True)

        job = self.jobs.update(self.job.id, change)
        if ended:
            logger.info("%s job %s for project %s %s", job.kind, job.id, job.project, outcome_summary(job))
        return True


def preannotate_task(model: SegmentationModel, context: ProjectContext, api, project: str, task_id: int,
                     owned: OwnedPredictions, computed: tuple[dict, str] | None = None) -> tuple[str, str]:
    """Pre-annotate one task; (outcome, message). A failure about the task is the FAILED outcome with
    its reason; Label Studio being down raises ``LabelStudioDown`` (with the mask when it was computed:
    ``computed`` hands it back on the next try). ``owned``: the record of the predictions this backend
    stored in the project."""
    try:
        task = api.task(task_id)
        if str(task.get("project")) != str(project):
            return FAILED, f"task {task_id} belongs to project {task.get('project')}, not {project}"
        predictions = task.get("predictions") or []
        owned.reconcile(task_id, predictions)
        if holds_version(predictions, context.version):
            return ALREADY_PREDICTED, remove_superseded(api, owned, project, task_id, predictions, context.version)
        if not has_prompt_regions(task, context.config) and context.proposer is None:
            return NO_PROMPTS, context.proposals_note if context.options.proposals else ""
        if computed is None:
            prediction = model.batch_prediction(task, context)
            if prediction.nothing_found:
                return NO_PROMPTS, prediction.empty_because
            if prediction.entry is None:
                return FAILED, "; ".join(prediction.skipped) or "no mask came out"
            computed = prediction.entry, "; ".join(prediction.skipped)
        entry, notes = computed
        try:
            predictions = api.predictions(task_id)  # as they are now: someone may have stored one meanwhile
            owned.reconcile(task_id, predictions)
            if holds_version(predictions, context.version):
                return ALREADY_PREDICTED, remove_superseded(api, owned, project, task_id, predictions, context.version)
            owned.storing(task_id, context.version, predictions)  # a store that times out is adopted later
            owned.stored(task_id, api.create_prediction(task_id, entry), context.version)
        except LabelStudioError as exc:
            if exc.transient:
                raise LabelStudioDown(str(exc), computed) from None
            raise
        left = remove_superseded(api, owned, project, task_id, predictions, context.version)
        return PREDICTED, "; ".join(note for note in (notes, left) if note)
    except LabelStudioDown:
        raise
    except (LabelStudioError, RequestError) as exc:
        if getattr(exc, "transient", False):
            raise LabelStudioDown(str(exc)) from None
        return FAILED, str(exc)
    except Exception as exc:  # one broken task never stops the job
        logger.exception("pre-annotation of task %s failed", task_id)
        return FAILED, f"{type(exc).__name__}: {str(exc)[:300]}"


def holds_version(predictions: list[dict], version: str) -> bool:
    return any(p.get("model_version") == version for p in predictions)


def remove_superseded(api, owned: OwnedPredictions, project: str, task_id: int, predictions: list[dict],
                      version: str) -> str:
    """Delete this backend's older predictions among the task's ``predictions`` (see
    ``owned_predictions.superseded``); one already gone counts as deleted. "" when all went, else
    why not: the task's prediction stands, and the next job over the task tries again."""
    deleted = []
    try:
        for old in superseded(predictions, owned.owned(task_id), version, project):
            api.delete_prediction(old["id"])  # False: deleted meanwhile, the same to us
            deleted.append(old["id"])
    except ProjectDataError as exc:
        logger.warning("task %s: an older prediction was not deleted: %s", task_id, exc)
        return f"an older prediction was not deleted: {exc}"
    finally:
        owned.forget(task_id, deleted)
    return ""


def run_queued_job(settings, job_id: str) -> None:
    """The job type's body in the embedded executor's process (``backend.jobs.types``), which runs one
    job at a time: the job gives way to queued training between chunks."""
    run_preannotation_job(settings, job_id, yield_to_first=True)


def run_preannotation_job(settings, job_id: str, model: SegmentationModel | None = None, tasks_api=None,
                          progress: Progress | None = None, yield_to_first: bool = False) -> None:
    """Work job ``job_id`` to its end in this process; the outcome goes to the job file, never raised.

    ``model``: None loads the serving model here with bounded threads (the embedded worker's
    spawned process). The job waits while another run works the project (``JobRun.wait_for_the_project``).
    SIGTERM (shutdown) pauses the job (back in the queue, no attempt counted), to resume. With
    ``yield_to_first`` (the embedded worker, which runs one job at a time), the job pauses after a
    chunk (or while waiting) when a job of a type that goes first (training) is queued, and resumes
    after it."""
    jobs = JobStore(JobLayout(settings.model_dir))
    job = jobs.mark_running(job_id, os.getpid())
    if job.state != RUNNING:  # cancelled before it started
        return
    run = JobRun(settings, jobs, job, tasks_api, progress)
    lock = run_lock(jobs.layout, job, settings.redis_url)
    with failures_recorded(jobs, job_id, JOB_ERRORS):
        try:
            with Heartbeat(jobs, job_id) as heartbeat:
                if not run.wait_for_the_project(lock, yield_to_first):
                    return
                heartbeat.keep_alive = lock.keep_alive
                try:
                    chunks = run.plan()
                    for chunk in range(len(chunks)):
                        if not run.tasks.pending(chunk):
                            continue
                        if yield_to_first and jobs.first_queued(job):
                            jobs.pause(job_id, PAUSED_FOR_TRAINING)
                            return
                        model = model or serving_model(settings, job_threads(settings))
                        run.work(chunk, model)
                    run.finish_if_complete()
                finally:
                    lock.release()
        except Cancelled:
            run.cancelled()
        except Stopped:
            run.report(force=True)  # the counts as they stand when it resumes
            # A shutdown (a deploy, a restart) is routine: the job waits for the next start, and
            # only crashes and kills count against its MAX_ATTEMPTS.
            jobs.pause(job_id, "paused by a shutdown (SIGTERM); resumes when the backend starts again")
