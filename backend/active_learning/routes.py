"""HTTP status and requests of background jobs (behind the app's Basic Auth like every route).

``GET /jobs`` lists jobs, oldest first, optionally ``?project=<id>``, ``?type=train|preannotate``
and ``?state=queued|running|finished|failed``; ``GET /jobs/<id>`` shows one. A job: id, type,
project, trigger, params, state, created/started/finished/heartbeat times (Unix seconds), progress
{stage, fraction, message; a pre-annotation job adds done, total, counts per outcome,
rate_per_min, eta_s and errors per task}, result and error. With SAM, ``embeddings`` beside the
jobs shows embedding ahead: images queued per priority, done (embedded, found stored already,
failed), dropped, total, rate per minute and the latest errors per task.

``POST /jobs {"type": "preannotate", "project": ID, "tasks": [ids], "scope": "all"|"unlabeled"}``
queues pre-annotation of the listed tasks and/or the scope (default: every task when no tasks are
listed); answers 202 with the job, or with the project's queued job that took the request on
(``"merged": true``).
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request

from backend.active_learning.jobs import FAILED, FINISHED, PREANNOTATE, QUEUED, RUNNING, TRAIN, JobNotFound
from backend.preannotation.trigger import SCOPES
from backend.project_store import ProjectIdError, project_id

STATES = (QUEUED, RUNNING, FINISHED, FAILED)
TYPES = (TRAIN, PREANNOTATE)
MAX_TASKS_PER_REQUEST = 100_000


def jobs_blueprint(active_learning, embeddings=None) -> Blueprint:
    """``embeddings``: the embed-ahead queue (``status()``), shown beside the jobs, or None."""
    blueprint = Blueprint("training_jobs", __name__)

    @blueprint.get("/jobs")
    def list_jobs():
        state, kind = request.args.get("state"), request.args.get("type")
        if state is not None and state not in STATES:
            abort(400, f"state must be one of {', '.join(STATES)}")
        if kind is not None and kind not in TYPES:
            abort(400, f"type must be one of {', '.join(TYPES)}")
        jobs = active_learning.job_list(request.args.get("project"))
        answer = {"jobs": [job for job in jobs if (state is None or job["state"] == state)
                           and (kind is None or job["type"] == kind)]}
        if embeddings is not None:
            answer["embeddings"] = embeddings.status()
        return jsonify(answer)

    @blueprint.get("/jobs/<job_id>")
    def show_job(job_id: str):
        try:
            return jsonify(active_learning.jobs.get(job_id).to_json())
        except JobNotFound:
            abort(404, f"no job {job_id[:80]}")

    @blueprint.post("/jobs")
    def create_job():
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            abort(400, "the request body must be a JSON object")
        if body.get("type") != PREANNOTATE:
            abort(400, f'"type" must be "{PREANNOTATE}" (training starts from Label Studio\'s "Start training")')
        try:
            project = project_id(body.get("project"))
        except ProjectIdError:
            abort(400, '"project" must be a Label Studio project id')
        tasks = body.get("tasks", [])
        if not isinstance(tasks, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tasks):
            abort(400, '"tasks" must be a list of task ids (positive integers)')
        if len(tasks) > MAX_TASKS_PER_REQUEST:
            abort(400, f'"tasks" lists {len(tasks)} ids; at most {MAX_TASKS_PER_REQUEST} per request')
        scope = body.get("scope", None if tasks else "all")
        if scope not in SCOPES:
            abort(400, f'"scope" must be one of {", ".join(s for s in SCOPES if s)} (or left out)')
        job, merged = active_learning.request_preannotation(project, "POST /jobs", tasks, scope)
        return jsonify({"job": job.to_json(), "merged": merged}), 202

    return blueprint
