"""The registry of job types: for each, the function that runs a job of it and its hooks, named by
dotted path (``"package.module:function"``) and imported only when called, so that ``backend.jobs``
depends on no feature package while every feature's jobs run through it.

A job type says:
- ``body``: ``(settings, job_id) -> None``, runs one job to its end in this process (the embedded
  executor's spawned process); the outcome goes to the job file, never raised.
- ``rq_body``: the same for an RQ worker (a pre-annotation job there only plans and queues its
  chunks); ``queue``: the RQ queue it goes to (``backend.jobs.queues``).
- ``resumable``: whether a job whose process died goes back to the queue (its progress is on disk)
  instead of failing; ``first``: whether it runs before other types' queued jobs (jobs of other
  types pause between their parts for it).
- ``words``: the type in messages; ``failure_note``: appended to the reason of a job that died.
- ``summary``: ``result -> str``, one line on a finished job (else its result's counts).
- ``rq_poll``: ``(jobs, queue, job) -> bool``, called by the dispatcher for a running job whose
  parts run in RQ workers; True when the job went back to the queue and must be submitted again.
- ``request``: ``(jobs, executor, project, body) -> (job, merged)`` for ``POST /jobs`` (raises
  ``JobRequestError``); types without one start otherwise, as ``start_hint`` says.
- ``follow_ups``: ``(settings, job, result) -> dict`` hooks a finished job of the type calls
  (before it is marked finished); what they return joins the job's result.
- ``on_lost``: ``(settings, job) -> None``, called by the dispatcher for a job that failed because
  its process died (killed, out of memory): the job's own code could not say so where the user looks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from backend.jobs.queues import PREANNOTATION_QUEUE, TRAINING_QUEUE

TRAIN, PREANNOTATE = "train", "preannotate"


class JobRequestError(ValueError):
    """A ``POST /jobs`` body a job type cannot take; the message is safe to answer with (400)."""


@dataclass(frozen=True)
class JobType:
    name: str
    words: str
    body: str
    rq_body: str
    queue: str
    resumable: bool = False
    first: bool = False
    failure_note: str = ""
    summary: str | None = None
    rq_poll: str | None = None
    request: str | None = None
    start_hint: str = ""
    follow_ups: tuple[str, ...] = ()
    on_lost: str | None = None


JOB_TYPES = {job_type.name: job_type for job_type in (
    JobType(TRAIN, "training", body="backend.active_learning.training_job:run_training_job",
            rq_body="backend.active_learning.training_job:run_training_job", queue=TRAINING_QUEUE, first=True,
            failure_note="; serving is unchanged", summary="backend.active_learning.training_job:result_summary",
            start_hint='training starts from Label Studio\'s "Start training"',
            follow_ups=("backend.preannotation.trigger:after_training",),
            on_lost="backend.active_learning.training_job:show_lost_job"),
    JobType(PREANNOTATE, "pre-annotation", body="backend.preannotation.job:run_queued_job",
            rq_body="backend.preannotation.chunks:plan_rq_chunks", queue=PREANNOTATION_QUEUE, resumable=True,
            rq_poll="backend.preannotation.chunks:poll_chunks", request="backend.preannotation.trigger:request_from_http"),
)}


def job_type(name: str) -> JobType:
    """The registered type ``name``; KeyError for a type this backend does not know."""
    return JOB_TYPES[name]


def known_type(name) -> JobType | None:
    """The registered type ``name``, or None for one this backend does not know (a newer version's
    job, or a damaged job file's ``type``, whatever its JSON type)."""
    return JOB_TYPES.get(name) if isinstance(name, str) else None


def load(dotted: str):
    """The function ``"package.module:function"`` names, imported now."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def follow_ups(settings, job, result: dict) -> dict:
    """Run the finished ``job``'s type's follow-up hooks; what they add to its result."""
    added: dict = {}
    for hook in job_type(job.type).follow_ups:
        added.update(load(hook)(settings, job, result))
    return added
