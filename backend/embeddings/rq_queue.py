"""Embedding ahead across machines (``REDIS_URL``): task images go to three RQ queues, one per
priority, which every ``python -m backend worker`` takes in priority order.

Only the image reference travels (URL, task id, project), as JSON; each worker builds SAM and the
image loader from its own settings once (``Components.of_this_process``), at its first embedding
job, runs embedding jobs in its own process (SAM stays loaded; see
``backend.jobs.worker.BackendWorker``) and writes the embedding into the shared store in Redis. Duplicates are dropped by RQ job id (one per image URL): an image queued or being
embedded is not queued again, one queued at a lower priority moves up, and one embedded in the
last ``RESULT_TTL_S`` is skipped except at ``CURRENT`` (which always checks the store). The
three queues together hold at most ``EMBED_QUEUE_SIZE`` images; beyond that requests are dropped.
"""

from __future__ import annotations

import hashlib
import logging

from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job

from backend.embeddings.embed_one import FAILED, EmbedRequest, embed_task_image
from backend.embeddings.progress import RedisProgress, work_status
from backend.embeddings.scheduler import CURRENT, PRIORITY_NAMES
from backend.redis_connection import redis_client
from backend.jobs.queues import EMBED_CURRENT, EMBED_IMPORT, EMBED_NEXT, IN_WORKER_TIMEOUT_S, SERIALIZER, rq_queue

logger = logging.getLogger(__name__)

EMBED_QUEUES = (EMBED_CURRENT, EMBED_NEXT, EMBED_IMPORT)  # by priority: CURRENT, NEXT, IMPORT
RESULT_TTL_S = 24 * 3600
_WAITING = ("queued", "deferred", "scheduled")


class RQEmbedQueue:
    def __init__(self, redis_url: str, max_queued: int):
        self.connection = redis_client(redis_url)
        self.queues = [rq_queue(name, self.connection) for name in EMBED_QUEUES]
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
            job = Job.fetch(job_id, connection=self.connection, serializer=SERIALIZER)
            status = job.get_status().value
        except NoSuchJobError:
            job, status = None, None
        if status == "started" or (status == "finished" and priority != CURRENT):
            return False
        if status in _WAITING:
            if EMBED_QUEUES.index(job.origin) <= priority:
                return False
            rq_queue(job.origin, self.connection).remove(job_id)  # moves up below
        elif sum(len(queue) for queue in self.queues) >= self.max_queued:
            self.progress.record("dropped")
            return False
        self.queues[priority].enqueue(run_embed_job, request.url, request.task_id, request.project, job_id=job_id,
                                      result_ttl=RESULT_TTL_S, failure_ttl=RESULT_TTL_S, job_timeout=IN_WORKER_TIMEOUT_S,
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


def run_embed_job(url: str, task_id: int | None, project: str | None) -> str:
    """The RQ task: embed one image with this worker's SAM (settings from its environment)."""
    from backend.components import Components
    from backend.images import ImageError

    components = Components.of_this_process()
    sam = components.segmenters.sam
    if sam is None:
        raise RuntimeError(f"this worker has no SAM to embed with: {components.segmenters.status['sam']}")
    progress = RedisProgress(redis_client(components.settings.redis_url))
    try:
        outcome = embed_task_image(sam, components.images, EmbedRequest(url, task_id, project))
    except ImageError as exc:
        progress.record(FAILED, task_id, str(exc))
        logger.warning("embedding task %s's image: %s", task_id, exc)
        return FAILED
    progress.record(outcome, task_id)
    return outcome
