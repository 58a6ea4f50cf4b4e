"""The embedded worker inside gunicorn (no REDIS_URL): the dispatcher that gunicorn.conf.py starts
in the worker process picks up a START_TRAINING job and runs it in a spawned process.

Label Studio is deliberately unreachable here, so the job must end failed with that reason;
the full success path with a real Label Studio is test_retraining.py (RQ mode)."""

from __future__ import annotations

import time

import pytest
import requests
from support.backend_server import BackendServer
from support.processes import free_port

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def embedded_backend(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("embedded")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("REDIS_URL", raising=False)
        server = BackendServer(workdir, workdir / "no-sam-checkpoint.pth", f"http://127.0.0.1:{free_port()}",
                               "not-a-real-token")
    yield server
    server.stop()


def test_start_training_runs_in_a_process_spawned_by_the_backend(embedded_backend):
    backend = embedded_backend
    start = {"action": "START_TRAINING", "project": {"id": 8}}
    # Label Studio's button sends the connection's Basic Auth; without it nothing starts.
    assert requests.post(f"{backend.url}/webhook", json=start, timeout=5).status_code == 401
    assert requests.get(f"{backend.url}/jobs", auth=backend.auth, timeout=5).json()["jobs"] == []
    answer = requests.post(f"{backend.url}/webhook", json=start, auth=backend.auth, timeout=5)
    assert answer.ok, answer.text
    job_id = answer.json()["job"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = requests.get(f"{backend.url}/jobs/{job_id}", auth=backend.auth, timeout=5).json()
        if job["state"] in ("finished", "failed"):
            break
        time.sleep(0.5)
    assert job["state"] == "failed", job
    assert "Label Studio" in job["error"] and "not-a-real-token" not in job["error"]
    assert job["pid"] is not None and job["started_at"] is not None
    # Rejected without Basic Auth, like every route but /webhook.
    assert requests.get(f"{backend.url}/jobs", timeout=5).status_code == 401
