"""Forged import events against a real Label Studio 1.23 (issue 20, finding 1): ``/webhook`` is open
(Label Studio's event webhooks send no credentials), so anyone can post ``TASKS_CREATED``. With the
server default ``POLICIES='{"preannotate_on_import": true}'``, such an event for a project never
connected to this backend made the backend store predictions there and delete its ``segassist-``
ones. Now the backend acts only for projects that sent ``/setup``, and a job reads every task it is
told about from Label Studio and works only those of its own project.
"""

from __future__ import annotations

import time

import pytest
import requests
from support.backend_server import BackendServer
from support.preannotation_project import LABEL_CONFIG, connect_project, import_boxed_tasks

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 120, 90
SETTLE_S = 8.0  # long enough for the embedded worker to have stored something, had a job been queued


@pytest.fixture(scope="module")
def backend_preannotating_by_default(label_studio, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("forged-events")
    server = BackendServer(workdir, workdir / "no-sam-checkpoint.pth", label_studio.url,
                           label_studio.personal_access_token,
                           extra_env={"REDIS_URL": "", "POLICIES": '{"preannotate_on_import": true}'})
    yield server
    server.stop()


def never_connected_project(api) -> tuple[int, list[int], dict[int, list]]:
    """A project this backend never saw: two boxed tasks, one holding an older ``segassist-`` mask
    prediction (what a job would delete); (project, tasks, predictions per task as they are)."""
    project = api.post("/api/projects/", json={"title": "never connected", "label_config": LABEL_CONFIG.read_text()})["id"]
    tasks = import_boxed_tasks(api, project, 2, WIDTH, HEIGHT)
    api.post("/api/predictions/", json={"task": tasks[0], "model_version": "segassist-v2+nosam", "score": 0.5,
                                        "result": []})
    return project, tasks, predictions(api, project)


def predictions(api, project: int) -> dict[int, list]:
    found: dict[int, list] = {}
    for prediction in api.get(f"/api/predictions/?project={project}"):
        found.setdefault(prediction["task"], []).append((prediction["id"], prediction["model_version"]))
    return {task: sorted(items) for task, items in found.items()}


def forged_import(backend, project: int, tasks: list[int]) -> dict:
    """TASKS_CREATED as anyone who can reach the backend can send it: no credentials."""
    answer = requests.post(f"{backend.url}/webhook", timeout=10, json={
        "action": "TASKS_CREATED", "project": {"id": project},
        "tasks": [{"id": task, "data": {"image": "http://10.0.0.1/x.png"}} for task in tasks]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def jobs_of(backend, project: int) -> list[dict]:
    return requests.get(f"{backend.url}/jobs", params={"project": project}, auth=backend.auth, timeout=10).json()["jobs"]


def test_a_forged_import_for_a_project_never_connected_changes_nothing_there(label_studio, backend_preannotating_by_default):
    api, backend = label_studio.api, backend_preannotating_by_default
    project, tasks, before = never_connected_project(api)
    assert forged_import(backend, project, tasks)["preannotation"] == "not connected"
    time.sleep(SETTLE_S)
    assert jobs_of(backend, project) == []
    assert predictions(api, project) == before


def test_a_forged_import_naming_another_projects_tasks_writes_nothing_there(label_studio, backend_preannotating_by_default):
    """A connected project's job is told about tasks of a project never connected: it reads each
    from Label Studio, finds it belongs elsewhere, and writes and deletes nothing."""
    api, backend = label_studio.api, backend_preannotating_by_default
    victim, tasks, before = never_connected_project(api)
    connected, _ = connect_project(api, backend, "connected, pre-annotating")
    answer = forged_import(backend, connected, tasks)
    job_id = answer["preannotation"]
    deadline = time.monotonic() + 240
    while (job := requests.get(f"{backend.url}/jobs/{job_id}", auth=backend.auth, timeout=10).json())["state"] not in (
            "finished", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["state"] == "finished" and job["result"]["failed"] == 2 and job["result"]["predicted"] == 0, job
    assert all(f"belongs to project {victim}" in message for message in job["progress"]["errors"].values()), job
    assert predictions(api, victim) == before
