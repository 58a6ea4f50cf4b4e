"""``python -m backend worker``: the one RQ worker for every queue of the backend (scale-out with
REDIS_URL): embeddings ahead, training and pre-annotation jobs, in the order ``queues.WORKER_QUEUES``
gives.

Start any number of workers, on any machines (GPU or CPU) that reach Redis and share MODEL_DIR with
the backend replicas; each needs the same LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY as the backend,
and the same model settings (SAM_CHECKPOINT, EXTREME_WEIGHTS, ...), since a pre-annotation chunk
loads the serving segmenters and embedding jobs use SAM (loaded once, at the worker's first one).
Without REDIS_URL there is nothing to run: the backend runs its jobs itself (embedded executor).

RQ's own loop quits when Redis goes away (a restart, a network cut) while it heartbeats or runs
maintenance; ours then waits for Redis (capped, jittered backoff; SIGTERM still stops it) and works
on with a fresh registration, so a job never waits for a worker that silently left. Only a shutdown
(SIGTERM, SIGINT) or ``--burst`` ends the command.

A shutdown while a job of ``PAUSABLE_QUEUES`` runs (a pre-annotation chunk: hours of work in all)
passes SIGTERM on to its work horse, which stops after the task in hand and hands the chunk back
(queued again without counting an attempt), so a deploy's restarts neither wait for a whole chunk
nor, killed after the grace period, count as crashes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from redis.exceptions import RedisError
from rq.defaults import DEFAULT_WORKER_TTL
from rq.exceptions import StopRequested
from rq.worker import SpawnWorker, WorkerStatus

from backend.jobs.backoff import Backoff
from backend.jobs.queues import (IN_WORKER_QUEUES, IN_WORKER_TIMEOUT_S, PREANNOTATION_QUEUE, SERIALIZER, WORKER_QUEUES,
                                 rq_queue)
from backend.log_config import configure_logging
from backend.settings import Settings

EMBEDDED_NOTE = (
    "REDIS_URL is not set, so there is no queue to work on: the backend runs training and pre-annotation jobs itself, in a "
    "background process of its host (state under MODEL_DIR). To scale out, set REDIS_URL (e.g. "
    "redis://localhost:6379/0) for the backend and for each `python -m backend worker`."
)
logger = logging.getLogger(__name__)

# Jobs there stop at a task boundary on SIGTERM and are queued again (``preannotation.chunks.run_rq_chunk``).
PAUSABLE_QUEUES = (PREANNOTATION_QUEUE,)
# An in-worker job sends no heartbeats while it runs; RQ waits this long past its timeout.
IN_WORKER_GRACE_S = 60
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """Whether SIGTERM or SIGINT came. Set from signal handlers, so a plain flag: an Event's lock,
    held by the main thread waiting on it, would deadlock a handler that sets it."""

    requested = False

    def request(self, *_signal) -> None:
        self.requested = True

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less when a shutdown comes."""
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


class BackendWorker(SpawnWorker):
    """Jobs of ``IN_WORKER_QUEUES`` (embeddings) run in the worker's own process, so SAM is loaded
    once; other jobs (training, pre-annotation) run in a freshly spawned process each. Spawned, not
    forked: a process forked after torch ran a parallel op hangs on its next one."""

    _running_queue: str | None = None
    _handlers_before_loop: dict = {}

    def __init__(self, *args, shutdown: Shutdown | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # whichever handler hears SIGTERM/SIGINT: RQ's loop ends for this, not for a lost Redis
        self.shutdown = shutdown or Shutdown()

    def request_stop(self, signum, frame):
        self.shutdown.request()
        if self._running_queue in PAUSABLE_QUEUES and self.horse_pid:
            try:  # the horse is in its own process group: it hears of the shutdown only from us
                os.kill(self.horse_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        super().request_stop(signum, frame)

    def _install_signal_handlers(self):
        self._handlers_before_loop = {sig: signal.getsignal(sig) for sig in SHUTDOWN_SIGNALS}
        super()._install_signal_handlers()
        if self.shutdown.requested:  # it came before RQ's handlers were in place (startup, a reconnect)
            self._stop_requested = True  # RQ's loop ends before it takes a job

    def teardown(self):
        # RQ's handlers outlive its loop: they would raise StopRequested into whatever runs next, or
        # stop this worker while the next one runs
        for sig, handler in self._handlers_before_loop.items():
            signal.signal(sig, handler)
        super().teardown()

    def execute_job(self, job, queue):
        self._running_queue = queue.name
        try:
            return self._execute(job, queue)
        finally:
            self._running_queue = None

    def _execute(self, job, queue):
        if queue.name not in IN_WORKER_QUEUES:
            return super().execute_job(job, queue)
        execution = self.prepare_execution(job)
        self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        if job.origin in IN_WORKER_QUEUES:  # no heartbeats while the job runs in this process
            return int(job.timeout or IN_WORKER_TIMEOUT_S) + IN_WORKER_GRACE_S
        return super().get_heartbeat_ttl(job, working_time)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--name", help="worker name shown by `rq info` (default: host and pid)")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.redis_url:
        print(EMBEDDED_NOTE, file=sys.stderr)
        return 2
    from backend.redis_connection import redis_client

    configure_logging()
    # RQ's worker blocks on its queues for up to its TTL (minus a margin) per wait
    connection = redis_client(settings.redis_url, blocking_reads_s=DEFAULT_WORKER_TTL)
    queues = [rq_queue(name, connection) for name in WORKER_QUEUES]
    shutdown = Shutdown()
    for sig in SHUTDOWN_SIGNALS:  # outside a worker's loop (startup, a reconnect) it is only remembered
        signal.signal(sig, shutdown.request)
    while not shutdown.requested:
        worker = BackendWorker(queues, connection=connection, name=args.name, serializer=SERIALIZER,
                               shutdown=shutdown)
        try:
            worker.work(burst=args.burst)
        except RedisError:  # its teardown, with Redis gone
            pass
        except StopRequested:  # RQ's handler, outside a job and before the loop caught it
            pass
        if args.burst or shutdown.requested:
            return 0
        logger.warning("worker %s lost its connection to Redis; reconnecting", worker.name)
        if not wait_for_redis(connection, shutdown):
            return 0
        try:
            worker.register_death()  # the registration Redis may still hold: the new one takes its name
        except RedisError:
            pass
        logger.warning("worker %s: Redis answers again; working on", worker.name)
    return 0


def wait_for_redis(connection, shutdown: Shutdown) -> bool:
    """Wait until Redis answers a PING (backoff); False when a shutdown came first."""
    backoff = Backoff()
    while not shutdown.requested:
        try:
            connection.ping()
            return True
        except RedisError as exc:
            wait_s = backoff.next_wait()
            logger.warning("Redis does not answer (%s); trying again in %.0f s", type(exc).__name__, wait_s)
            shutdown.wait(wait_s)
    return False
