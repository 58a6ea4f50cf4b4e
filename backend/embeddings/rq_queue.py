"""Embedding ahead across machines (``REDIS_URL``): task images go to three RQ queues, one per
priority, which every ``python -m backend worker`` takes in priority order.

Only the image reference travels (URL, task id, project); each worker loads SAM and the image
loader from its own settings once, at its first embedding job, runs embedding jobs in its own
process (SAM stays loaded; see ``BackendWorker``) and writes the embedding into the shared store
in Redis. Duplicates are dropped by RQ job id (one per image URL): an image queued or being
embedded is not queued again, one queued at a lower priority moves up, and one embedded in the
last ``RESULT_TTL_S`` is skipped except at ``CURRENT`` (which always checks the store). The
three queues together hold at most ``EMBED_QUEUE_SIZE`` images; beyond that requests are dropped.
"""

from __future__ import annotations

import hashlib
import logging

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.worker import SpawnWorker, WorkerStatus

from backend.embeddings.embed_one import FAILED, EmbedRequest, embed_task_image
from backend.embeddings.progress import RedisProgress, work_status
from backend.embeddings.scheduler import CURRENT, PRIORITY_NAMES

logger = logging.getLogger(__name__)

EMBED_QUEUES = tuple(f"segmentation-embed-{name}" for name in PRIORITY_NAMES)  # CURRENT, NEXT, IMPORT
RESULT_TTL_S = 24 * 3600
JOB_TIMEOUT_S = 1800
_WAITING = ("queued", "deferred", "scheduled")


class RQEmbedQueue:
    def __init__(self, redis_url: str, max_queued: int):
        self.connection = Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=10)
        self.queues = [Queue(name, connection=self.connection) for name in EMBED_QUEUES]
        self.max_queued = max_queued
        self.progress = RedisProgress(self.connection)

    def submit(self, requests: list[EmbedRequest], priority: int) -> int:
        """Queue ``requests`` at ``priority``; returns how many were queued or moved up. Redis
        failures are logged and the requests dropped (embedding ahead is an optimisation)."""
        try:
            return sum(self._submit_one(request, priority) for request in requests)
        except RedisError as exc:
            logger.warning("embed ahead: Redis failed (%s); %d images not queued", type(exc).__name__, len(requests))
            return 0

    def _submit_one(self, request: EmbedRequest, priority: int) -> bool:
        job_id = "embed-" + hashlib.sha1(request.url.encode()).hexdigest()
        try:
            job = Job.fetch(job_id, connection=self.connection)
            status = job.get_status().value
        except NoSuchJobError:
            job, status = None, None
        if status == "started" or (status == "finished" and priority != CURRENT):
            return False
        if status in _WAITING:
            if EMBED_QUEUES.index(job.origin) <= priority:
                return False
            Queue(job.origin, connection=self.connection).remove(job_id)  # moves up below
        elif sum(len(queue) for queue in self.queues) >= self.max_queued:
            self.progress.record("dropped")
            return False
        self.queues[priority].enqueue(run_embed_job, request.url, request.task_id, request.project, job_id=job_id,
                                      result_ttl=RESULT_TTL_S, failure_ttl=RESULT_TTL_S, job_timeout=JOB_TIMEOUT_S,
                                      description=f"embed task {request.task_id}'s image")
        return True

    def depth(self) -> dict:
        try:
            counts = [len(queue) for queue in self.queues]
        except RedisError as exc:
            return {"error": f"Redis failed ({type(exc).__name__})"}
        return {**dict(zip(PRIORITY_NAMES, counts)), "total": sum(counts)}

    def status(self) -> dict:
        queued = self.depth()
        try:
            progress = self.progress.summary()
            running = sum(1 for queue in self.queues for _ in queue.started_job_registry.get_job_ids())
        except RedisError as exc:
            return {"runs_in": "rq workers", "error": f"Redis failed ({type(exc).__name__})"}
        return work_status("rq workers", queued, running, progress)


_worker_models = None  # (sam, images) of this worker process, loaded at its first embedding job


def run_embed_job(url: str, task_id: int | None, project: str | None) -> str:
    """The RQ task: embed one image with this worker's SAM (settings from its environment)."""
    global _worker_models
    from backend.images import ImageError, ImageLoader
    from backend.segmenter_set import SegmenterSet
    from backend.settings import Settings

    settings = Settings.from_env()
    if _worker_models is None:
        segmenters = SegmenterSet.load(settings)
        if segmenters.sam is None:
            raise RuntimeError(f"this worker has no SAM to embed with: {segmenters.status['sam']}")
        _worker_models = (segmenters.sam, ImageLoader(settings))
    sam, images = _worker_models
    progress = RedisProgress(Redis.from_url(settings.redis_url))
    try:
        outcome = embed_task_image(sam, images, EmbedRequest(url, task_id, project))
    except ImageError as exc:
        progress.record(FAILED, task_id, str(exc))
        logger.warning("embedding task %s's image: %s", task_id, exc)
        return FAILED
    progress.record(outcome, task_id)
    return outcome


class BackendWorker(SpawnWorker):
    """The RQ worker of ``python -m backend worker``: embedding jobs run in the worker's own process,
    so SAM is loaded once; other jobs (training, pre-annotation) run in a freshly spawned process
    each. Spawned, not forked: a process forked after torch ran a parallel op hangs on its next one."""

    def execute_job(self, job, queue):
        if queue.name not in EMBED_QUEUES:
            return super().execute_job(job, queue)
        execution = self.prepare_execution(job)
        self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        if job.origin in EMBED_QUEUES:  # no heartbeats while the job runs in this process
            return int(job.timeout or JOB_TIMEOUT_S) + 60
        return super().get_heartbeat_ttl(job, working_time)
