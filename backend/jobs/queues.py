"""The RQ queues every ``python -m backend worker`` takes, in the one order they are taken, and how
jobs travel through them.

Only ids, numbers and strings travel (job ids, chunk numbers, image URLs), as JSON (RQ's
``JSONSerializer``): whoever can write to Redis can queue a call of one of our job functions with
bad arguments, but cannot make a worker unpickle code. Settings and secrets never travel; each
worker reads them from its own environment.
"""

from __future__ import annotations

from rq.serializers import JSONSerializer

EMBED_CURRENT = "segmentation-embed-current"  # the tasks annotators open
EMBED_NEXT = "segmentation-embed-next"  # their next tasks
EMBED_IMPORT = "segmentation-embed-import"  # imported tasks
TRAINING_QUEUE = "segmentation-training"
PREANNOTATION_QUEUE = "segmentation-preannotation"  # a job's planning, then its chunks

# First to last: what an annotator waits for, then minutes-long training, then hours-long
# pre-annotation (a project's chunks spread over every worker), then imports' embeddings.
WORKER_QUEUES = (EMBED_CURRENT, EMBED_NEXT, TRAINING_QUEUE, PREANNOTATION_QUEUE, EMBED_IMPORT)
# Jobs of these queues run in the worker's own process (SAM stays loaded between them); others in
# a freshly spawned process each.
IN_WORKER_QUEUES = (EMBED_CURRENT, EMBED_NEXT, EMBED_IMPORT)
IN_WORKER_TIMEOUT_S = 1800  # RQ's timeout of an in-worker job

SERIALIZER = JSONSerializer


def rq_queue(name: str, connection):
    """The RQ queue ``name`` on ``connection``, with our serializer."""
    from rq import Queue

    return Queue(name, connection=connection, serializer=SERIALIZER)
