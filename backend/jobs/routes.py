"""HTTP status and requests of background jobs (behind the app's Basic Auth like every route).

``GET /jobs`` lists jobs, oldest first, optionally ``?project=<id>``, ``?type=train|preannotate``
and ``?state=queued|running|finished|failed|cancelled``; ``GET /jobs/<id>`` shows one. A job: id,
type, project, trigger, params, state, created/started/finished/heartbeat/progressed times (Unix
seconds), progress {stage, fraction, message; a pre-annotation job adds done, total, counts per
outcome, rate_per_min, eta_s and errors per task}, result and error; ``stalled``: true while a
running job's progress (stage, count, fraction) has not moved for ``STALLED_AFTER_S`` (10 min: its
workers are gone, or it waits for Label Studio — its message says which); ``cancel_requested_at``.

``DELETE /jobs/<id>`` cancels a job: a queued one at once (200, state ``cancelled``); a running
pre-annotation job stops at its next task boundary, in its process or in each RQ chunk (202, then
``cancelled``), keeping the predictions it stored; 409 for an ended job or a running training job
(minutes, no task boundary); cancelling a cancelled job again answers 200. With SAM, ``embeddings`` beside the
jobs shows embedding ahead: images queued per priority, done (embedded, found stored already,
failed), dropped, total, rate per minute and the latest errors per task.

``POST /jobs {"type": …, "project": ID, …}`` queues a job of a type that takes requests
(``JobType.request``; pre-annotation: ``backend.preannotation.trigger.request_from_http``) and
answers 202 with the job, or with the project's queued job that took the request on
(``"merged": true``); 503 when the job queue (Redis) cannot be reached, and nothing is queued.
"""

from __future__ import annotations

import logging

from flask import Blueprint, abort, jsonify, request
from redis.exceptions import RedisError

from backend.jobs.executors import Executor
from backend.jobs.store import (CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, Job, JobNotFound, JobStore,
                                NotCancellable, stalled)
from backend.jobs.types import JOB_TYPES, JobRequestError, load
from backend.project_store import ProjectIdError, project_id

logger = logging.getLogger(__name__)

STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)
TYPES = tuple(JOB_TYPES)
REQUESTABLE = tuple(name for name, job_type in JOB_TYPES.items() if job_type.request)


def jobs_blueprint(jobs: JobStore, executor: Executor, embeddings=None) -> Blueprint:
    """``embeddings``: the embed-ahead queue (``status()``), shown beside the jobs, or None."""
    blueprint = Blueprint("jobs", __name__)

    @blueprint.get("/jobs")
    def list_jobs():
        state, kind = request.args.get("state"), request.args.get("type")
        if state is not None and state not in STATES:
            abort(400, f"state must be one of {', '.join(STATES)}")
        if kind is not None and kind not in TYPES:
            abort(400, f"type must be one of {', '.join(TYPES)}")
        answer = {"jobs": [shown(job) for job in jobs.list(request.args.get("project"))
                           if (state is None or job.state == state) and (kind is None or job.type == kind)]}
        if embeddings is not None:
            answer["embeddings"] = embeddings.status()
        return jsonify(answer)

    @blueprint.get("/jobs/<job_id>")
    def show_job(job_id: str):
        try:
            return jsonify(shown(jobs.get(job_id)))
        except JobNotFound:
            abort(404, f"no job {job_id[:80]}")

    @blueprint.delete("/jobs/<job_id>")
    def cancel_job(job_id: str):
        try:
            job = jobs.cancel(job_id)
        except JobNotFound:
            abort(404, f"no job {job_id[:80]}")
        except NotCancellable as exc:
            abort(409, str(exc))
        return jsonify(shown(job)), 200 if job.state == CANCELLED else 202

    @blueprint.post("/jobs")
    def create_job():
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            abort(400, "the request body must be a JSON object")
        kind = body.get("type")
        if kind not in REQUESTABLE:
            hints = "; ".join(t.start_hint for t in JOB_TYPES.values() if not t.request and t.start_hint)
            abort(400, f'"type" must be "{"/".join(REQUESTABLE)}"' + (f" ({hints})" if hints else ""))
        try:
            project = project_id(body.get("project"))
        except ProjectIdError:
            abort(400, '"project" must be a Label Studio project id')
        try:
            job, merged = load(JOB_TYPES[kind].request)(jobs, executor, project, body)
        except JobRequestError as exc:
            abort(400, str(exc))
        except RedisError as exc:  # the RQ executor's queue: nothing was queued (the job file is removed)
            logger.warning("POST /jobs: the job queue is unreachable: %s", type(exc).__name__)
            abort(503, "the job queue (Redis, REDIS_URL) cannot be reached; nothing was queued, try again later")
        return jsonify({"job": job.to_json(), "merged": merged}), 202

    return blueprint


def shown(job: Job) -> dict:
    return {**job.to_json(), "stalled": stalled(job)}
