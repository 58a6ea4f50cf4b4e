"""Pre-annotation across machines (REDIS_URL): a job is planned once, then split into chunks of
``PREANNOTATE_CHUNK_TASKS`` tasks on the RQ queue ``segmentation-preannotation``, so any number of
``python -m backend worker`` processes share one project's tasks.

- ``plan_rq_chunks`` (the RQ task for the job itself): takes the project's pre-annotation run lock
  in Redis for the job, lists the tasks, writes the plan, queues one RQ job per chunk
  (``<job id>-c<n>``). The job is then running without a pid: its chunks, not one process, carry
  it. While another run holds the project, the job stays queued (saying so) and the RQ task ends;
  the dispatcher queues it again (``backend.jobs.executors.RQExecutor``): no worker waits.
- ``run_rq_chunk``: a worker loads the serving model and works one chunk, holding the job's run
  lock beside the job's other chunks (refreshed after each task); the chunk that completes the job
  marks it finished and frees the project. SIGTERM (the worker's shutdown, passed on by
  ``jobs.worker``) stops it after the task in hand and hands the chunk back (``released-<n>.json``):
  queued again without counting an attempt.
- ``poll_chunks`` (the dispatcher, every ``POLL_EVERY_S``): keeps the running job's run lock alive
  between chunks; a chunk RQ lost (worker killed, Redis flushed), or one RQ still calls started
  whose worker is dead by its ownership on disk (``chunk_owner.py``: pid gone on this host, or
  silent for a minute) — without waiting minutes for RQ to notice — is queued again, under a new RQ
  id per attempt (``<job id>-c<n>-a<k>``, so RQ's late cleanup of the dead attempt touches nothing),
  to resume from its tasks' outcomes on disk, at most MAX_ATTEMPTS times; then its remaining tasks
  are recorded as failed, so the job still ends.
"""

from __future__ import annotations

import logging
import signal
import time

from backend.components import Components
from backend.files import read_json, write_json_atomic
from backend.jobs.executors import LEGACY, LOST, RQ_JOB_TIMEOUT_S, rq_status
from backend.jobs.layout import JobLayout
from backend.jobs.lifecycle import Stopped, raise_on_sigterm
from backend.jobs.queues import PREANNOTATION_QUEUE, rq_queue
from backend.jobs.run_lock import RunLockBusy
from backend.jobs.store import MAX_ATTEMPTS, QUEUED, RUNNING, Job, JobStore
from backend.preannotation.job import JOB_ERRORS, Cancelled, JobRun, job_threads, run_lock
from backend.preannotation.chunk_owner import ChunkOwner, dead_owner, owner_file
from backend.preannotation.progress import FAILED, JobTasks

logger = logging.getLogger(__name__)

# The dispatcher asks Redis about a job's chunks at most this often.
POLL_EVERY_S = 10.0
_polled_at: dict[str, float] = {}


def chunk_id(job_id: str, chunk: int, attempt: int = 1) -> str:
    """The RQ id of ``chunk``'s ``attempt``-th run."""
    return f"{job_id}-c{chunk}" if attempt <= 1 else f"{job_id}-c{chunk}-a{attempt}"


def plan_rq_chunks(settings, job_id: str, queue=None, tasks_api=None) -> None:
    jobs = JobStore(JobLayout(settings.model_dir))
    lock = run_lock(jobs.layout, jobs.get(job_id), settings.redis_url)
    try:
        lock.acquire(blocking=False)
    except RunLockBusy as busy:  # stays queued; the dispatcher queues it again
        message = f"waiting for {busy.holder or 'another process'}, the project's other pre-annotation run, to end"
        jobs.update(job_id, lambda job: job.progress.update(stage="waiting", message=message))
        return
    job = jobs.mark_running(job_id, None)
    if job.state != RUNNING:  # cancelled before a worker took it
        lock.release()
        return
    run = JobRun(settings, jobs, job, tasks_api)
    try:
        chunks = run.plan()
    except JOB_ERRORS as exc:
        jobs.fail(job_id, str(exc))
        lock.release()
        return
    queue = queue or _queue(settings)
    for chunk in range(len(chunks)):
        if run.tasks.pending(chunk):
            _enqueue(queue, job, chunk)
    if run.finish_if_complete():  # a job without tasks ends here
        lock.release()


def run_rq_chunk(job_id: str, chunk: int) -> None:
    """The RQ task for one chunk: settings come from the worker's environment, never through Redis;
    the serving model is built once per worker process. The chunk is this process's (on disk) from
    its start, model loading included."""
    previous = raise_on_sigterm()  # first: a shutdown while the model loads hands the chunk back too
    try:
        components = Components.of_this_process()
        settings = components.settings
        job = JobStore(JobLayout(settings.model_dir)).get(job_id)
        directory = JobTasks(JobLayout(settings.model_dir), job.project, job_id).directory
        try:
            with ChunkOwner(directory, chunk):
                work_chunk(settings, job_id, chunk, components.job_model(job_threads(settings)))
        except Stopped:
            released = released_file(directory, chunk)
            write_json_atomic(released, (read_json(released, 0) or 0) + 1)
            logger.info("pre-annotation job %s: chunk %d handed back at a shutdown; it is queued again", job_id, chunk)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def released_file(directory, chunk: int):
    """How often ``chunk`` was handed back at a shutdown (starts that count as no attempt)."""
    return directory / f"released-{chunk:05d}.json"


def work_chunk(settings, job_id: str, chunk: int, model, tasks_api=None) -> None:
    jobs = JobStore(JobLayout(settings.model_dir))
    job = jobs.get(job_id)
    if job.state != RUNNING:
        return  # failed (or finished) meanwhile: nothing left to do
    lock = run_lock(jobs.layout, job, settings.redis_url)
    try:
        lock.acquire(blocking=False)  # the job's own: its other chunks hold it too
    except RunLockBusy as busy:  # the job's lock expired and another run took the project
        logger.warning("pre-annotation job %s: chunk %d waits for %s, the project's other run", job_id, chunk,
                       busy.holder)
        released = released_file(JobTasks(jobs.layout, job.project, job_id).directory, chunk)
        write_json_atomic(released, (read_json(released, 0) or 0) + 1)  # handed back: no attempt counted
        return  # poll_chunks queues it again once the project is the job's again
    run = JobRun(settings, jobs, job, tasks_api)
    try:
        run.work(chunk, model, lock)
    except Cancelled:
        run.cancelled()
        lock.release()
        return
    except JOB_ERRORS as exc:  # the project cannot be read: every chunk would fail alike
        jobs.fail(job_id, str(exc))
        lock.release()
        return
    if run.finish_if_complete():
        lock.release()


def poll_chunks(jobs: JobStore, queue, job: Job) -> bool:
    """Queue again the chunks of running job ``job`` that RQ lost; finish it when complete.
    Returns True when the job itself went back to the queue (its planning was lost) and must be
    submitted again."""
    if time.monotonic() - _polled_at.get(job.id, float("-inf")) < POLL_EVERY_S:
        return False
    _polled_at[job.id] = time.monotonic()
    connection = queue.connection
    if rq_status(connection, job.id) in ("queued", "started"):
        return False  # still planning and queueing its chunks
    run = JobRun(None, jobs, job)
    lock = run_lock(jobs.layout, job, connection)
    if job.cancel_requested_at is not None:  # no chunk got to a task boundary since (none running?)
        run.cancelled()
        lock.release()
        return False
    chunks = run.tasks.chunks()
    if chunks is None:  # planning was lost before it wrote the plan
        return jobs.abandon(job.id, "planning the job was interrupted").state == QUEUED
    if not lock.refresh():  # expired while nothing of the job ran, and another run took the project
        return False  # its chunks go again once the project is free
    attempts_file = run.tasks.directory / "attempts.json"
    attempts = read_json(attempts_file, {}) or {}
    for chunk in range(len(chunks)):
        if not run.tasks.pending(chunk):
            continue
        tries = attempts.get(str(chunk), 1)
        rq_id = chunk_id(job.id, chunk, tries)
        status = rq_status(connection, rq_id)
        if status == LEGACY:  # queued in the pickled format before an upgrade: again, as JSON
            queue.remove(rq_id)
            _enqueue(queue, job, chunk, tries)
            continue
        why = "was lost by RQ"
        if status == "started":
            why = dead_owner(run.tasks.directory, chunk)
            if why is None:
                continue  # being worked
            owner_file(run.tasks.directory, chunk).unlink(missing_ok=True)
        elif status not in LOST + ("finished",):
            continue
        deaths = tries - (read_json(released_file(run.tasks.directory, chunk), 0) or 0)  # not handed back
        if deaths >= MAX_ATTEMPTS:
            for task in run.tasks.pending(chunk):
                run.tasks.record(chunk, task, FAILED, f"the worker on this task's chunk stopped {deaths} times "
                                                      "(killed, out of memory?) before finishing it")
            continue
        attempts[str(chunk)] = tries + 1
        write_json_atomic(attempts_file, attempts)
        logger.warning("pre-annotation job %s: chunk %d %s; queued again (attempt %d)", job.id, chunk, why, tries + 1)
        _enqueue(queue, job, chunk, tries + 1)
    if run.finish_if_complete():
        lock.release()
    return False


def _enqueue(queue, job: Job, chunk: int, attempt: int = 1) -> None:
    queue.enqueue(run_rq_chunk, job.id, chunk, job_id=chunk_id(job.id, chunk, attempt), job_timeout=RQ_JOB_TIMEOUT_S,
                  description=f"pre-annotation of project {job.project}, chunk {chunk}")


def _queue(settings):
    from backend.redis_connection import redis_client

    return rq_queue(PREANNOTATION_QUEUE, redis_client(settings.redis_url))
