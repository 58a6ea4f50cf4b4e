"""Where background jobs (training and pre-annotation) run.

- ``EmbeddedExecutor`` (default, nothing to configure): the backend host runs queued jobs one at a
  time, each in a freshly spawned Python process (separate memory, bounded torch threads), so the
  web workers keep serving. Jobs wait on disk, so a restart resumes the queue.
- ``RQExecutor`` (``REDIS_URL`` set): training jobs go to the RQ queue ``QUEUE_NAME``, pre-annotation
  jobs to ``PREANNOTATION_QUEUE`` where they split into chunks of tasks
  (``backend.preannotation.chunks``), consumed by any number of ``python -m backend worker``
  processes on machines that share ``MODEL_DIR``. Only job ids travel through Redis; each worker
  reads its own settings (and secrets) from its environment.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from typing import Callable, Protocol

from backend.active_learning.jobs import PREANNOTATE, QUEUED, RUNNING, TRAIN, Job, JobStore, outcome_summary
from backend.active_learning.layout import Layout
from backend.active_learning.training_job import run_training_job
from backend.log_config import configure_logging

logger = logging.getLogger(__name__)

QUEUE_NAME = "segmentation-training"
PREANNOTATION_QUEUE = "segmentation-preannotation"
RQ_JOB_TIMEOUT_S = 24 * 3600

# target(settings, job_id): runs one job to its end in the spawned process.
JobTarget = Callable[[object, str], None]


class Executor(Protocol):
    def submit(self, job: Job) -> None:
        """Hand a newly queued job over (returns at once)."""

    def poll(self) -> None:
        """Advance the executor's own work; called by the dispatcher about twice a second."""


def run_job(settings, job_id: str) -> None:
    """Run job ``job_id`` to its end in this process, whatever its type; the outcome goes to the job file."""
    configure_logging()  # a freshly spawned interpreter: without this its INFO lines (outcomes) are lost
    if JobStore(Layout(settings.model_dir)).get(job_id).type == PREANNOTATE:
        from backend.preannotation.job import run_preannotation_job

        run_preannotation_job(settings, job_id, yield_to_training=True)
    else:
        run_training_job(settings, job_id)


class EmbeddedExecutor:
    """Runs the oldest queued job whose project has nothing running, one job at a time."""

    def __init__(self, settings, jobs: JobStore, target: JobTarget = run_job):
        self._settings, self._jobs, self._target = settings, jobs, target
        self._context = multiprocessing.get_context("spawn")  # a clean interpreter: no forked locks or threads
        self._current: tuple[str, multiprocessing.process.BaseProcess] | None = None

    def submit(self, job: Job) -> None:
        """Nothing to do: queued jobs wait on disk until ``poll`` starts them."""

    def poll(self) -> None:
        if self._current is not None:
            job_id, process = self._current
            if process.is_alive():
                return
            process.join()
            # Only changes a job the process left unfinished (killed, crashed before reporting).
            job = self._jobs.get(job_id)
            if job.state == RUNNING:
                reason = (f"the {job.kind} process {exit_description(process.exitcode)}"
                          + ("; serving is unchanged" if job.type != PREANNOTATE else ""))
                job = self._jobs.abandon(job_id, reason)
                logger.warning("%s job %s for project %s %s", job.kind, job.id, job.project,
                               outcome_summary(job) or f"goes back to the queue: {reason}")
            self._current = None
        job = self._next_job()
        if job is not None:
            # daemon: a backend that shuts down stops its job (SIGTERM -> the job ends as failed)
            process = self._context.Process(target=self._target, args=(self._settings, job.id), name=f"job-{job.id}",
                                            daemon=True)
            process.start()
            self._jobs.mark_running(job.id, process.pid)  # at once, so no other runner starts it too
            self._current = (job.id, process)
            logger.info("%s job %s started (pid %s)", job.kind, job.id, process.pid)

    def running_pid(self) -> int | None:
        return self._current[1].pid if self._current is not None else None

    def _next_job(self) -> Job | None:
        """The oldest queued training job, else the oldest queued other job, of a project with
        nothing running. Training goes first: it takes minutes, a pre-annotation job may take hours
        (and pauses between chunks for queued training, see ``backend.preannotation.job``)."""
        jobs = self._jobs.list()
        busy = {job.project for job in jobs if job.state == RUNNING}
        ready = sorted((job for job in jobs if job.state == QUEUED and job.project not in busy),
                       key=lambda job: job.type != TRAIN)
        return ready[0] if ready else None


def exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode} without reporting a result"


class RQExecutor:
    """Enqueues jobs for RQ workers, and fails jobs RQ lost before they started (Redis flushed,
    a worker died between taking the job and starting it), so that none stays queued forever; a
    running pre-annotation job's lost chunks are queued again (``backend.preannotation.chunks``)."""

    def __init__(self, redis_url: str, jobs: JobStore):
        from redis import Redis
        from rq import Queue

        connection = Redis.from_url(redis_url)
        self.queue = Queue(QUEUE_NAME, connection=connection)
        self.preannotation_queue = Queue(PREANNOTATION_QUEUE, connection=connection)
        self._jobs = jobs

    def submit(self, job: Job) -> None:
        queue = self.preannotation_queue if job.type == PREANNOTATE else self.queue
        queue.enqueue(run_rq_job, job.id, job_id=job.id, job_timeout=RQ_JOB_TIMEOUT_S,
                      description=f"{job.kind} of project {job.project}")

    def poll(self) -> None:
        from backend.preannotation.chunks import poll_chunks

        for job in self._jobs.list():
            if job.state == QUEUED:
                status = rq_status(self.queue.connection, job.id)
                if status in LOST:
                    job = self._jobs.fail(job.id, f"the queued job is {status or 'gone from Redis'} before a worker "
                                                  "started it" + ("; serving is unchanged" if job.type != PREANNOTATE else ""))
                    logger.warning("%s job %s for project %s %s", job.kind, job.id, job.project, outcome_summary(job))
            elif job.state == RUNNING and job.type == PREANNOTATE and job.pid is None:
                if poll_chunks(self._jobs, self.preannotation_queue, job):
                    self.submit(job)


# RQ states of a job that will never run (None: Redis does not know it).
LOST = (None, "failed", "stopped", "canceled")


def rq_status(connection, rq_job_id: str) -> str | None:
    """The RQ job's status ("queued", "started", "finished", "failed", ...), or None if Redis has no such job."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob

    try:
        status = RQJob.fetch(rq_job_id, connection=connection).get_status()
    except NoSuchJobError:
        return None
    return None if status is None else status.value


def run_rq_job(job_id: str) -> None:
    """The RQ task: settings come from the worker's environment, never through Redis. A pre-annotation
    job here only plans its chunks and queues them for the workers."""
    from backend.settings import Settings

    settings = Settings.from_env()
    if JobStore(Layout(settings.model_dir)).get(job_id).type == PREANNOTATE:
        from backend.preannotation.chunks import plan_rq_chunks

        plan_rq_chunks(settings, job_id)
    else:
        run_training_job(settings, job_id)


def make_executor(settings, jobs: JobStore) -> Executor:
    return RQExecutor(settings.redis_url, jobs) if settings.redis_url else EmbeddedExecutor(settings, jobs)
