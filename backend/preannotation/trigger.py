"""Starting pre-annotation jobs: ``request_preannotation``, which every trigger (TASKS_CREATED with
the project option ``preannotate_on_import`` on, ``POST /jobs``, a newly published model version)
goes through.

The queue is bounded per project: a request while the project already has a queued pre-annotation
job is merged into it (its task list grows, or it covers every task), so a project has at most one
queued and one running pre-annotation job, however many imports or requests arrive.
"""

from __future__ import annotations

import logging

from backend.files import file_lock
from backend.active_learning.jobs import PREANNOTATE, QUEUED, Job, JobStore

logger = logging.getLogger(__name__)

# What a job covers besides its listed tasks: nothing, the project's tasks without annotations, or all.
SCOPES = (None, "unlabeled", "all")


def request_preannotation(jobs: JobStore, executor, project: str, trigger: str, tasks: list[int] = (),
                          scope: str | None = None) -> tuple[Job, bool]:
    """Queue a pre-annotation job for ``project`` covering the task ids ``tasks`` and the tasks of
    ``scope`` (see SCOPES), or merge the request into the job already queued for it. Returns (the
    job, whether the request was merged into an existing one)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    with file_lock(jobs.layout.project_dir(project) / "preannotate.lock"):
        queued = [job for job in jobs.list(project) if job.type == PREANNOTATE and job.state == QUEUED]
        if queued:
            return jobs.update(queued[0].id, lambda job: _merge(job.params, tasks, scope)), True
        params = {"tasks": [], "scope": None}
        _merge(params, tasks, scope)
        job = jobs.create(project, trigger, PREANNOTATE, params)
        try:
            executor.submit(job)
        except Exception:  # e.g. Redis down: no job rather than one that never runs
            jobs.delete(job.id)
            raise
    logger.info("queued pre-annotation job %s for project %s: %s", job.id, job.project, trigger)
    return job, False


def _merge(params: dict, tasks, scope: str | None) -> None:
    """Widen a job's ``params`` ({"tasks", "scope"}) to cover ``tasks`` and ``scope`` too."""
    params["tasks"] = sorted(set(params.get("tasks") or []) | {int(task) for task in tasks})
    params["scope"] = max(params.get("scope"), scope, key=SCOPES.index)
