"""Starting pre-annotation jobs: ``request_preannotation``, which every trigger goes through: an
import with the project option ``preannotate_on_import`` on (``Preannotation``, the webhook sink for
TASKS_CREATED), ``POST /jobs`` (``request_from_http``) and a newly published model version with
``preannotate_on_import`` or ``proposals`` on (``after_training``, a follow-up of training jobs).

Only projects that sent ``/setup`` to this backend are pre-annotated by an import or a new version
(``preannotates_on_import``): the server default (``POLICIES``) fills in options of a connected
project and never decides for a project this backend was never connected to. The open webhook only
hints which tasks are new: a job reads every task from Label Studio and works only those of its
project, so a forged event can at most make the backend do for a connected project what that project
asked for anyway. An event naming more than ``MAX_EVENT_TASKS`` tasks queues the project's unlabeled
tasks instead of the list (read from Label Studio, nothing lost, nothing from the payload kept).

The queue is bounded per project: a request while the project already has a queued pre-annotation
job is merged into it (its task list grows, or it covers every task), so a project has at most one
queued and one running pre-annotation job, however many imports or requests arrive. A job lists at
most ``PREANNOTATE_MAX_TASKS`` task ids (the lowest); those beyond are counted in its params
(``over_cap``) and reported as ``not_planned``, never silently dropped.
"""

from __future__ import annotations

import logging

from backend.files import file_lock
from backend.jobs.executors import Executor, make_executor
from backend.jobs.layout import JobLayout
from backend.jobs.store import QUEUED, Job, JobStore
from backend.jobs.types import PREANNOTATE, JobRequestError
from backend.project_options import ProjectOptions
from backend.project_store import ProjectStore
from backend.settings import Settings
from backend.webhooks import TASKS_CREATED, EventError, WebhookEvent

logger = logging.getLogger(__name__)

# What a job covers besides its listed tasks: nothing, the project's tasks without annotations, or all.
SCOPES = (None, "unlabeled", "all")


def request_preannotation(jobs: JobStore, executor, project: str, trigger: str, tasks: list[int] = (),
                          scope: str | None = None,
                          max_tasks: int = Settings.preannotate_max_tasks) -> tuple[Job, bool]:
    """Queue a pre-annotation job for ``project`` covering the task ids ``tasks`` and the tasks of
    ``scope`` (see SCOPES), or merge the request into the job already queued for it. Returns (the
    job, whether the request was merged into an existing one)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    with file_lock(jobs.layout.project_dir(project) / "preannotate.lock"):
        queued = [job for job in jobs.list(project) if job.type == PREANNOTATE and job.state == QUEUED]
        if queued:
            return jobs.update(queued[0].id, lambda job: _merge(job.params, tasks, scope, max_tasks)), True
        params = {"tasks": [], "scope": None}
        _merge(params, tasks, scope, max_tasks)
        job = jobs.create(project, trigger, PREANNOTATE, params)
        try:
            executor.submit(job)
        except Exception:  # e.g. Redis down: no job rather than one that never runs
            jobs.delete(job.id)
            raise
    logger.info("queued pre-annotation job %s for project %s: %s", job.id, job.project, trigger)
    return job, False


def _merge(params: dict, tasks, scope: str | None, max_tasks: int) -> None:
    """Widen a job's ``params`` ({"tasks", "scope"}) to cover ``tasks`` and ``scope`` too, keeping at
    most ``max_tasks`` ids (the excess is counted in ``over_cap``)."""
    merged = sorted(set(params.get("tasks") or []) | {int(task) for task in tasks})
    if len(merged) > max_tasks:
        params["over_cap"] = params.get("over_cap", 0) + len(merged) - max_tasks
        merged = merged[:max_tasks]
    params["tasks"] = merged
    params["scope"] = max(params.get("scope"), scope, key=SCOPES.index)


# Task ids taken from one TASKS_CREATED event; beyond them the job covers the unlabeled tasks.
MAX_EVENT_TASKS = 10_000


def preannotates_on_import(settings, setup) -> bool:
    """Whether imports and new versions pre-annotate the project whose ``/setup`` is ``setup``: never
    without one (a project never connected to this backend), else its options over the server default."""
    return setup is not None and ProjectOptions.for_project(settings.default_options, setup).preannotate_on_import


class Preannotation:
    """The webhook sink for imports: with ``preannotate_on_import`` on for a connected project, a
    pre-annotation job is queued for the new tasks (or the project's queued one takes them on)."""

    def __init__(self, settings, jobs: JobStore, executor: Executor, projects: ProjectStore):
        self.settings, self.jobs, self.executor, self.projects = settings, jobs, executor, projects

    def wants(self, action: str) -> bool:
        return action == TASKS_CREATED

    def handle(self, event: WebhookEvent) -> dict:
        """Raises EventError for a payload without a project, or (when on) without task ids."""
        project = event.project()
        setup = self.projects.load(project)
        if setup is None:
            logger.info("TASKS_CREATED for project %s, which sent no /setup to this backend: nothing queued", project)
            return {"preannotation": "not connected"}
        if not preannotates_on_import(self.settings, setup):
            return {"preannotation": "off"}
        ids = [task["id"] for task in event.tasks if isinstance(task, dict) and isinstance(task.get("id"), int)]
        if not ids:
            raise EventError("TASKS_CREATED without a 'tasks' list of objects with an integer 'id'")
        trigger = f"TASKS_CREATED ({len(ids)} tasks)"
        if len(ids) > MAX_EVENT_TASKS:
            logger.info("TASKS_CREATED for project %s names %d tasks (over %d): the job covers its unlabeled tasks",
                        project, len(ids), MAX_EVENT_TASKS)
            job, merged = request_preannotation(self.jobs, self.executor, project, trigger, scope="unlabeled",
                                                max_tasks=self.settings.preannotate_max_tasks)
        else:
            job, merged = request_preannotation(self.jobs, self.executor, project, trigger, tasks=ids,
                                                max_tasks=self.settings.preannotate_max_tasks)
        return {"preannotation": job.id, "merged": merged}


MAX_TASKS_PER_REQUEST = 100_000


def request_from_http(jobs: JobStore, executor: Executor, project: str, body: dict) -> tuple[Job, bool]:
    """``POST /jobs {"type": "preannotate", "project": ID, "tasks": [ids], "scope": "all"|"unlabeled"}``:
    the listed tasks and/or the scope (default: every task when no tasks are listed). Raises
    JobRequestError for a body it cannot take."""
    tasks = body.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tasks):
        raise JobRequestError('"tasks" must be a list of task ids (positive integers)')
    if len(tasks) > MAX_TASKS_PER_REQUEST:
        raise JobRequestError(f'"tasks" lists {len(tasks)} ids; at most {MAX_TASKS_PER_REQUEST} per request')
    scope = body.get("scope", None if tasks else "all")
    if scope not in SCOPES:
        raise JobRequestError(f'"scope" must be one of {", ".join(s for s in SCOPES if s)} (or left out)')
    return request_preannotation(jobs, executor, project, "POST /jobs", tasks, scope)


def after_training(settings, job: Job, result: dict) -> dict:
    """A training job's follow-up: with ``preannotate_on_import`` or ``proposals`` on for a connected
    project, a published version (extreme-point or proposal model) queues pre-annotation of the
    project's unlabeled tasks, so their predictions come from it without a click. What happened, for
    the training job's result."""
    proposals = result.get("proposals") or {}
    version = proposals.get("version") if proposals.get("published") else result.get("version")
    if not (result.get("published") or proposals.get("published")):
        return {}
    setup = ProjectStore.in_model_dir(settings.model_dir).load(job.project)
    if not (preannotates_on_import(settings, setup)
            or (setup is not None and ProjectOptions.for_project(settings.default_options, setup).proposals)):
        return {}
    jobs = JobStore(JobLayout(settings.model_dir))
    try:
        queued, _ = request_preannotation(jobs, make_executor(settings, jobs), job.project,
                                          f"new model version {version}", scope="unlabeled",
                                          max_tasks=settings.preannotate_max_tasks)
    except Exception as exc:  # the version is published either way
        logger.exception("could not queue pre-annotation with %s for project %s", version, job.project)
        return {"preannotation_error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"preannotation_job": queued.id}
