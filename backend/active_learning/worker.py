"""``python -m backend worker``: run training and pre-annotation jobs and embeddings ahead from the
RQ queues (scale-out with REDIS_URL).

Start any number of workers, on any machines (GPU or CPU) that reach Redis and share MODEL_DIR with
the backend replicas; each needs the same LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY as the backend,
and the same model settings (SAM_CHECKPOINT, EXTREME_WEIGHTS, ...), since a pre-annotation chunk
loads the serving segmenters and embedding jobs use SAM (loaded once, at the worker's first one).
Queues, first to last: embeddings of the tasks annotators open, then of their next tasks, training,
pre-annotation chunks (one project's spread over all workers), then embeddings of imported tasks.
Without REDIS_URL there is nothing to run: the backend runs its jobs itself (embedded worker).
"""

from __future__ import annotations

import argparse
import sys

from backend.active_learning.queue import PREANNOTATION_QUEUE, QUEUE_NAME
from backend.log_config import configure_logging
from backend.settings import Settings

EMBEDDED_NOTE = (
    "REDIS_URL is not set, so there is no queue to work on: the backend runs training and pre-annotation jobs itself, in a "
    "background process of its host (state under MODEL_DIR). To scale out, set REDIS_URL (e.g. "
    "redis://localhost:6379/0) for the backend and for each `python -m backend worker`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--name", help="worker name shown by `rq info` (default: host and pid)")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.redis_url:
        print(EMBEDDED_NOTE, file=sys.stderr)
        return 2
    from redis import Redis
    from rq import Queue

    from backend.embeddings.rq_queue import EMBED_QUEUES, BackendWorker

    configure_logging()
    connection = Redis.from_url(settings.redis_url)
    current, upcoming, imported = EMBED_QUEUES
    names = (current, upcoming, QUEUE_NAME, PREANNOTATION_QUEUE, imported)
    queues = [Queue(name, connection=connection) for name in names]
    worker = BackendWorker(queues, connection=connection, name=args.name)
    worker.work(burst=args.burst)
    return 0
