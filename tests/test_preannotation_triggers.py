"""What starts pre-annotation jobs, through the real Flask app: an import (TASKS_CREATED) in a
project with ``preannotate_on_import``, ``POST /jobs``, and a model version published by
active learning; duplicates merged into the project's queued job."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from active_learning_fakes import FakeReader, FakeTrainer, RecordingExecutor, write_fake_weights
from segmentation_fakes import setup_body

from backend.jobs.store import JobStore
from backend.jobs.types import PREANNOTATE
from backend.jobs.layout import JobLayout
from backend.components import Components
from backend.active_learning.training_job import run_training_job
from backend.app import create_app
from backend.project_options import ProjectOptions
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings

PROJECT = {"id": 7, "title": "cars", "token": "project-secret-token"}
AUTH = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}


@pytest.fixture
def settings(tmp_path):
    return Settings(model_dir=tmp_path / "model_dir", extreme_weights=write_fake_weights(tmp_path / "default", 0.5),
                    basic_auth_user="ls", basic_auth_pass="pw")


@pytest.fixture
def app(settings):
    executor = RecordingExecutor()
    learning = Components(settings, segmenters=SegmenterSet(), images=object(), executor=executor)
    client = create_app(components=learning).test_client()
    return client, learning, executor


def imported(*task_ids):
    return {"action": "TASKS_CREATED", "project": PROJECT, "tasks": [{"id": i, "data": {"image": "x"}} for i in task_ids]}


def preannotation_jobs(learning):
    return [job for job in learning.jobs.list("7") if job.type == PREANNOTATE]


def test_an_import_queues_pre_annotation_of_its_tasks_when_the_project_asks_for_it(app):
    client, learning, executor = app
    assert client.post("/setup", json=setup_body({"preannotate_on_import": True}), headers=AUTH).status_code == 200
    first = client.post("/webhook", json=imported(3, 4))
    assert first.status_code == 200 and first.get_json()["merged"] is False
    second = client.post("/webhook", json=imported(5, 3))  # a later import while the job still waits
    assert second.get_json() == {"status": "ok", "preannotation": first.get_json()["preannotation"], "merged": True}
    (job,) = preannotation_jobs(learning)
    assert job.params == {"tasks": [3, 4, 5], "scope": None} and job.trigger == "TASKS_CREATED (2 tasks)"
    assert executor.submitted == [job.id]


def test_an_import_without_preannotate_on_import_queues_nothing(app):
    client, learning, executor = app
    client.post("/setup", json=setup_body({"preannotate_on_import": False}), headers=AUTH)
    assert client.post("/webhook", json=imported(3)).get_json()["preannotation"] == "off"
    assert client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 99}, "tasks": []}).status_code == 200
    assert preannotation_jobs(learning) == [] and executor.submitted == []


def server_default_on(settings) -> Components:
    return Components(replace(settings, default_options=ProjectOptions.parse({"preannotate_on_import": True}, "POLICIES")),
                      segmenters=SegmenterSet(), images=object(), executor=RecordingExecutor())


def test_the_server_default_switches_it_on_for_every_connected_project(settings):
    learning = server_default_on(settings)
    client = create_app(components=learning).test_client()
    assert client.post("/setup", json=setup_body(), headers=AUTH).status_code == 200
    assert learning.webhooks.handle("TASKS_CREATED", imported(1))["merged"] is False
    bad = client.post("/webhook", json={"action": "TASKS_CREATED", "project": PROJECT, "tasks": "all"})
    assert bad.status_code == 400 and "'tasks'" in bad.get_json()["error"]


def test_an_unauthenticated_import_event_for_a_project_never_connected_queues_nothing(settings):
    """Finding 1 of issue 20: the server default decided for a project that never sent /setup, and a
    forged TASKS_CREATED made the backend write predictions there."""
    learning = server_default_on(settings)
    client = create_app(components=learning).test_client()
    answer = client.post("/webhook", json=imported(3, 4))  # no credentials: the webhook is open
    assert answer.status_code == 200 and answer.get_json()["preannotation"] == "not connected"
    assert learning.jobs.list() == [] and learning.executor.submitted == []


def test_an_event_naming_more_tasks_than_the_cap_queues_the_projects_unlabeled_tasks(app, monkeypatch):
    from backend.preannotation import trigger

    monkeypatch.setattr(trigger, "MAX_EVENT_TASKS", 3)
    client, learning, _ = app
    client.post("/setup", json=setup_body({"preannotate_on_import": True}), headers=AUTH)
    assert client.post("/webhook", json=imported(1, 2, 3, 4)).status_code == 200
    (job,) = preannotation_jobs(learning)
    assert job.params == {"tasks": [], "scope": "unlabeled"} and job.trigger == "TASKS_CREATED (4 tasks)"


def test_preannotate_on_import_must_be_a_bool(app):
    client, _, _ = app
    answer = client.post("/setup", json=setup_body({"preannotate_on_import": "yes"}), headers=AUTH)
    assert answer.status_code == 422 and "preannotate_on_import" in answer.get_json()["error"]


def test_post_jobs_queues_pre_annotation_behind_basic_auth(app):
    client, learning, executor = app
    body = {"type": "preannotate", "project": 7}
    assert client.post("/jobs", json=body).status_code == 401
    answer = client.post("/jobs", json=body, headers=AUTH)
    assert answer.status_code == 202
    job = answer.get_json()["job"]
    assert job["type"] == PREANNOTATE and job["params"] == {"tasks": [], "scope": "all"} and job["state"] == "queued"
    again = client.post("/jobs", json={**body, "tasks": [8]}, headers=AUTH).get_json()
    assert again["merged"] is True and again["job"]["id"] == job["id"] and again["job"]["params"]["tasks"] == [8]
    listed = client.get("/jobs?type=preannotate&project=7", headers=AUTH).get_json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get("/jobs?type=train", headers=AUTH).get_json()["jobs"] == []
    assert executor.submitted == [job["id"]]


@pytest.mark.parametrize("body, field", [
    ({"project": 7}, '"type"'),
    ({"type": "train", "project": 7}, '"type"'),
    ({"type": "preannotate"}, '"project"'),
    ({"type": "preannotate", "project": "seven"}, '"project"'),
    ({"type": "preannotate", "project": 7, "tasks": [1, "2"]}, '"tasks"'),
    ({"type": "preannotate", "project": 7, "tasks": 5}, '"tasks"'),
    ({"type": "preannotate", "project": 7, "scope": "some"}, '"scope"'),
])
def test_post_jobs_names_the_bad_field(app, body, field):
    client, learning, _ = app
    answer = client.post("/jobs", json=body, headers=AUTH)
    assert answer.status_code == 400 and field in answer.get_json()["error"]
    assert learning.jobs.list() == []


def test_a_published_version_refreshes_unlabeled_tasks_when_the_project_preannotates(settings, app):
    client, learning, _ = app
    client.post("/setup", json=setup_body({"preannotate_on_import": True}), headers=AUTH)
    jobs = JobStore(JobLayout(settings.model_dir))
    training = jobs.create("7", "test")
    run_training_job(settings, training.id, trainer=FakeTrainer(), reader=FakeReader())
    training = jobs.get(training.id)
    assert training.result["published"], training.result
    (job,) = preannotation_jobs(learning)
    assert training.result["preannotation_job"] == job.id
    assert job.params == {"tasks": [], "scope": "unlabeled"} and job.trigger == "new model version p7-v1"


def test_a_published_version_queues_nothing_without_preannotate_on_import(settings, app):
    client, learning, _ = app
    client.post("/setup", json=setup_body(), headers=AUTH)
    jobs = JobStore(JobLayout(settings.model_dir))
    training = jobs.create("7", "test")
    run_training_job(settings, training.id, trainer=FakeTrainer(), reader=FakeReader())
    assert jobs.get(training.id).result["published"] and preannotation_jobs(learning) == []


def test_delete_jobs_cancels_a_queued_job_at_once_and_asks_a_running_one_to_stop(app):
    client, learning, _ = app
    jobs = learning.jobs
    queued = client.post("/jobs", json={"type": "preannotate", "project": 7}, headers=AUTH).get_json()["job"]
    assert client.delete(f"/jobs/{queued['id']}").status_code == 401
    answer = client.delete(f"/jobs/{queued['id']}", headers=AUTH)
    assert answer.status_code == 200 and answer.get_json()["state"] == "cancelled"
    assert client.delete(f"/jobs/{queued['id']}", headers=AUTH).status_code == 200  # again: nothing changes
    assert jobs.mark_running(queued["id"], 4242).state == "cancelled", "a worker never starts a cancelled job"
    assert [j["id"] for j in client.get("/jobs?state=cancelled", headers=AUTH).get_json()["jobs"]] == [queued["id"]]

    running = client.post("/jobs", json={"type": "preannotate", "project": 7}, headers=AUTH).get_json()["job"]
    jobs.mark_running(running["id"], 4242)
    answer = client.delete(f"/jobs/{running['id']}", headers=AUTH)
    assert answer.status_code == 202 and answer.get_json()["state"] == "running"
    assert answer.get_json()["cancel_requested_at"] is not None and answer.get_json()["stalled"] is False

    training = jobs.create("7", "test")
    jobs.mark_running(training.id, 4243)
    answer = client.delete(f"/jobs/{training.id}", headers=AUTH)
    assert answer.status_code == 409 and "cannot be stopped midway" in answer.get_json()["error"]
    jobs.finish(training.id, {})
    assert client.delete(f"/jobs/{training.id}", headers=AUTH).status_code == 409
    assert client.delete("/jobs/p7-nothing", headers=AUTH).status_code == 404


def test_a_running_job_whose_progress_does_not_move_shows_stalled(app):
    import time

    from backend.jobs.store import STALLED_AFTER_S

    client, learning, _ = app
    job = learning.jobs.create("7", "test", PREANNOTATE, {"tasks": [1], "scope": None})
    learning.jobs.mark_running(job.id, None)
    assert client.get(f"/jobs/{job.id}", headers=AUTH).get_json()["stalled"] is False
    learning.jobs.heartbeat(job.id, {"stage": "pre-annotating", "done": 0, "fraction": 0.0, "message": "0/1 tasks"})
    learning.jobs.update(job.id, lambda j: setattr(j, "progressed_at", time.time() - STALLED_AFTER_S - 1))
    learning.jobs.heartbeat(job.id, {"stage": "pre-annotating", "done": 0, "fraction": 0.0, "message": "retrying"})
    assert client.get(f"/jobs/{job.id}", headers=AUTH).get_json()["stalled"] is True, "a new message is no progress"
    learning.jobs.heartbeat(job.id, {"stage": "pre-annotating", "done": 1, "fraction": 1.0, "message": "1/1 tasks"})
    assert client.get("/jobs", headers=AUTH).get_json()["jobs"][0]["stalled"] is False


def test_a_version_published_for_a_project_never_connected_queues_nothing(settings):
    """Training can start from the open webhook's annotation events: the version it publishes for a
    project without /setup must not make the server default pre-annotate (write to) that project."""
    learning = server_default_on(settings)
    training = learning.jobs.create("7", "test")
    run_training_job(learning.settings, training.id, trainer=FakeTrainer(), reader=FakeReader())
    training = learning.jobs.get(training.id)
    assert training.result["published"] and "preannotation_job" not in training.result
    assert preannotation_jobs(learning) == []
