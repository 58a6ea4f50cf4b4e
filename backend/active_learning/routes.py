"""HTTP status of training jobs (behind the app's Basic Auth like every route).

``GET /jobs`` lists jobs, oldest first, optionally ``?project=<id>`` and ``?state=queued|running|
finished|failed``; ``GET /jobs/<id>`` shows one. A job: id, project, trigger, state, created/started/
finished/heartbeat times (Unix seconds), progress {stage, fraction, message}, result (metrics before
and after, published version) and error.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request

from backend.active_learning.jobs import FAILED, FINISHED, QUEUED, RUNNING, JobNotFound

STATES = (QUEUED, RUNNING, FINISHED, FAILED)


def jobs_blueprint(active_learning) -> Blueprint:
    blueprint = Blueprint("training_jobs", __name__)

    @blueprint.get("/jobs")
    def list_jobs():
        state = request.args.get("state")
        if state is not None and state not in STATES:
            abort(400, f"state must be one of {', '.join(STATES)}")
        jobs = active_learning.job_list(request.args.get("project"))
        return jsonify({"jobs": [job for job in jobs if state is None or job["state"] == state]})

    @blueprint.get("/jobs/<job_id>")
    def show_job(job_id: str):
        try:
            return jsonify(active_learning.jobs.get(job_id).to_json())
        except JobNotFound:
            abort(404, f"no training job {job_id[:80]}")

    return blueprint
