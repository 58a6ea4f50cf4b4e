"""Where background jobs run, whatever their type (``types.py`` names each type's body).

- ``EmbeddedExecutor`` (default, nothing to configure): the backend host runs queued jobs one at a
  time, each in a freshly spawned Python process (separate memory, bounded torch threads), so the
  web workers keep serving. Jobs wait on disk, so a restart resumes the queue.
- ``RQExecutor`` (``REDIS_URL`` set): each job goes to its type's RQ queue (``queues.py``),
  consumed by any number of ``python -m backend worker`` processes on machines that share
  ``MODEL_DIR``; a type may split a job into parts there (pre-annotation chunks) and watch them
  (``JobType.rq_poll``). Only job ids travel through Redis, as JSON; each worker reads its own
  settings (and secrets) from its environment.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
import zlib
from typing import Callable, Protocol

from backend.jobs.layout import JobLayout
from backend.jobs.queues import rq_queue
from backend.jobs.store import QUEUED, RUNNING, Job, JobNotFound, JobStore, outcome_summary
from backend.jobs.types import JOB_TYPES, job_type, known_type, load
from backend.log_config import configure_logging

logger = logging.getLogger(__name__)

RQ_JOB_TIMEOUT_S = 24 * 3600

# target(settings, job_id): runs one job to its end in the spawned process.
JobTarget = Callable[[object, str], None]


class Executor(Protocol):
    def submit(self, job: Job) -> None:
        """Hand a newly queued job over (returns at once)."""

    def poll(self) -> None:
        """Advance the executor's own work; called by the dispatcher about twice a second."""


def run_job(settings, job_id: str) -> None:
    """Run job ``job_id`` to its end in this process with its type's body; the outcome goes to the job file."""
    configure_logging()  # a freshly spawned interpreter: without this its INFO lines (outcomes) are lost
    job = JobStore(JobLayout(settings.model_dir)).get(job_id)
    load(job_type(job.type).body)(settings, job_id)


class UnknownTypes:
    """Jobs of a type this backend does not know (written by a newer version, or a damaged file): a
    queued one is failed saying so; a running one (another version's runner may have it) is left
    alone with one warning. Neither stops an executor from running the other jobs."""

    def __init__(self, jobs: JobStore):
        self._jobs = jobs
        self._warned: set[str] = set()

    def known(self, listed: list[Job]) -> list[Job]:
        """``listed`` without the jobs of unknown types, after failing the queued ones."""
        kept = []
        for job in listed:
            if known_type(job.type) is not None:
                kept.append(job)
                continue
            what = f"job type {str(job.type)[:40]!r}"
            if job.state == QUEUED:
                try:
                    job = self._jobs.fail(job.id, f"this backend knows no {what} (a job of a newer version, "
                                                  "or a damaged job file); it cannot run here")
                    logger.warning("job %s for project %s %s", job.id, job.project, outcome_summary(job))
                    continue
                except JobNotFound:  # its file names another id: nothing to mark, only to warn about
                    pass
            if job.id not in self._warned:
                self._warned.add(job.id)
                logger.warning("job %s (%s) is %s with a %s this backend does not know: left alone",
                               job.id, job.project, job.state, what)
        return kept


class EmbeddedExecutor:
    """Runs the oldest queued job whose project has nothing running, one job at a time."""

    def __init__(self, settings, jobs: JobStore, target: JobTarget = run_job):
        self._settings, self._jobs, self._target = settings, jobs, target
        self._context = multiprocessing.get_context("spawn")  # a clean interpreter: no forked locks or threads
        self._current: tuple[str, multiprocessing.process.BaseProcess] | None = None
        self._unknown = UnknownTypes(jobs)

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
                reason = f"the {job.kind} process {exit_description(process.exitcode)}{job_type(job.type).failure_note}"
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
        """The oldest queued job of a type that goes first (training: minutes), else the oldest
        other queued job (pre-annotation may take hours, and pauses between chunks for the first
        kind), of a project with nothing running."""
        jobs = self._jobs.list()
        busy = {job.project for job in jobs if job.state == RUNNING}
        ready = sorted((job for job in self._unknown.known(jobs) if job.state == QUEUED and job.project not in busy),
                       key=lambda job: not job_type(job.type).first)
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
    running job's lost parts are its type's to queue again (``JobType.rq_poll``). A job queued in
    the pickled format of earlier versions is queued again as JSON (``LEGACY``). A job its RQ task
    left queued (a pre-annotation job waiting for the project's other run) goes to RQ again every
    REQUEUE_WAITING_S. A queued job Redis does not know is lost only once it stays unknown for
    MISSING_FOR_S: another thread or process may have written it and not yet queued it."""

    def __init__(self, redis_url: str, jobs: JobStore):
        from backend.redis_connection import redis_client

        connection = redis_client(redis_url)
        self.queues = {name: rq_queue(job_type(name).queue, connection) for name in JOB_TYPES}
        self.connection = connection
        self._jobs = jobs
        self._unknown = UnknownTypes(jobs)
        self._requeued_at: dict[str, float] = {}
        self._missing_since: dict[str, float] = {}

    def submit(self, job: Job) -> None:
        self.queues[job.type].enqueue(run_rq_job, job.id, job_id=job.id, job_timeout=RQ_JOB_TIMEOUT_S,
                                      description=f"{job.kind} of project {job.project}")

    def poll(self) -> None:
        for job in self._unknown.known(self._jobs.list()):
            if job.state == QUEUED:
                status = rq_status(self.connection, job.id)
                if status is not None:
                    self._missing_since.pop(job.id, None)
                if status == LEGACY:
                    self.queues[job.type].remove(job.id)
                    self.submit(job)
                    logger.info("%s job %s was queued in the pickled format; queued again as JSON", job.kind, job.id)
                elif status is None and not self._missing_long(job):
                    continue
                elif status in LOST:
                    self._missing_since.pop(job.id, None)
                    job = self._jobs.fail(job.id, f"the queued job is {status or 'gone from Redis'} before a worker "
                                                  f"started it{job_type(job.type).failure_note}")
                    logger.warning("%s job %s for project %s %s", job.kind, job.id, job.project, outcome_summary(job))
                elif status == "finished":
                    self._requeue_waiting(job)
            elif job.state == RUNNING and job.pid is None and job_type(job.type).rq_poll is not None:
                if load(job_type(job.type).rq_poll)(self._jobs, self.queues[job.type], job):
                    self.submit(job)

    def _missing_long(self, job: Job) -> bool:
        """Whether Redis has not known queued ``job`` since MISSING_FOR_S (or longer)."""
        first_missed = self._missing_since.setdefault(job.id, time.monotonic())
        return time.monotonic() - first_missed >= MISSING_FOR_S

    def _requeue_waiting(self, job: Job) -> None:
        now = time.monotonic()
        if now - self._requeued_at.get(job.id, float("-inf")) < REQUEUE_WAITING_S:
            return
        try:
            if self._jobs.get(job.id).state != QUEUED:  # its RQ task started it after ``poll`` listed the jobs
                return
        except JobNotFound:
            return
        self._requeued_at[job.id] = now
        from rq.job import Job as RQJob

        self.queues[job.type].remove(job.id)
        self.connection.delete(RQJob.key_for(job.id))  # the finished record is set to expire: a new one carries it
        self.submit(job)


# A job left queued by its RQ task goes to RQ again this often (each try is a quick look at a lock).
REQUEUE_WAITING_S = 5.0
# A queued job is lost when Redis has not known it for this long (its submit takes milliseconds).
MISSING_FOR_S = 10.0
# RQ states of a job that will never run (None: Redis does not know it).
LOST = (None, "failed", "stopped", "canceled")
# An RQ job queued by a version before JSON (a pickled payload; our workers no longer unpickle).
LEGACY = "legacy"


def rq_status(connection, rq_job_id: str) -> str | None:
    """The RQ job's status ("queued", "started", "finished", "failed", ...), None if Redis has no
    such job, or LEGACY for a job not yet done whose payload is pickled (queued before JSON; a
    worker that took it failed it unread). Reads the job's hash itself: nothing is deserialized."""
    from rq.job import Job as RQJob

    status, data = connection.hmget(RQJob.key_for(rq_job_id), ["status", "data"])
    if status is None:
        return None
    status = status.decode()
    if status not in ("started", "finished") and data is not None and is_pickled(data):
        return LEGACY
    return status


def is_pickled(data: bytes) -> bool:
    """Whether an RQ job payload is a pickle (every pickle since protocol 2 starts with 0x80) rather
    than our JSON."""
    try:
        data = zlib.decompress(data)
    except zlib.error:
        pass
    return data[:1] == b"\x80"


def run_rq_job(job_id: str) -> None:
    """The RQ task: settings come from the worker's environment, never through Redis."""
    from backend.settings import Settings

    settings = Settings.from_env()
    job = JobStore(JobLayout(settings.model_dir)).get(job_id)
    load(job_type(job.type).rq_body)(settings, job_id)


def make_executor(settings, jobs: JobStore) -> Executor:
    return RQExecutor(settings.redis_url, jobs) if settings.redis_url else EmbeddedExecutor(settings, jobs)
