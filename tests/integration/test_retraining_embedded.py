"""The embedded worker inside gunicorn (no REDIS_URL): the dispatcher that gunicorn.conf.py starts
in the worker process picks up a START_TRAINING job of a project that sent /setup and runs it in a
spawned process.

Label Studio is deliberately unreachable here, so the job must wait for it (and later fail) saying so;
the full success path with a real Label Studio is test_retraining.py (RQ mode)."""

from __future__ import annotations

import time

import pytest
import requests
from segmentation_fakes import CONFIG
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
    # A project that never sent /setup to this backend is not trained, whoever asks.
    stranger = requests.post(f"{backend.url}/webhook", json=start, auth=backend.auth, timeout=5)
    assert stranger.ok and stranger.json()["training"] == "not connected", stranger.text
    assert requests.get(f"{backend.url}/jobs", auth=backend.auth, timeout=5).json()["jobs"] == []
    # Label Studio calls /setup whenever a model is connected.
    setup = requests.post(f"{backend.url}/setup", json={"project": "8.1700000000", "schema": CONFIG},
                          auth=backend.auth, timeout=30)
    assert setup.ok, setup.text
    answer = requests.post(f"{backend.url}/webhook", json=start, auth=backend.auth, timeout=5)
    assert answer.ok, answer.text
    job_id = answer.json()["job"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = requests.get(f"{backend.url}/jobs/{job_id}", auth=backend.auth, timeout=5).json()
        if job["state"] in ("finished", "failed") or "waiting for Label Studio" in job["progress"].get("message", ""):
            break
        time.sleep(0.5)
    # It fails once Label Studio has been unreachable for LABEL_STUDIO_OUTAGE_LIMIT_S (minutes); by then
    # the spawned process has said why it waits.
    said = job["error"] if job["state"] == "failed" else job["progress"]["message"]
    assert job["state"] in ("failed", "running") and "Label Studio" in said, job
    assert "not-a-real-token" not in said
    assert job["pid"] is not None and job["started_at"] is not None
    # Rejected without Basic Auth, like every route but /webhook.
    assert requests.get(f"{backend.url}/jobs", timeout=5).status_code == 401
