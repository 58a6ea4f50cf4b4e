"""An alias, kept only for RQ jobs queued by versions before ``backend.jobs`` existed: they name
``backend.active_learning.queue.run_rq_job``. Those were pickled; the dispatcher queues them again
as JSON under ``backend.jobs.executors.run_rq_job`` (``LEGACY``), so only a worker still running
with RQ's pickle serializer during a rolling upgrade reaches this name. Remove it once no deployment
upgrades from a version before 2026-12 with jobs still queued."""

from backend.jobs.executors import run_rq_job

__all__ = ["run_rq_job"]
