"""Requests that answered 500 (issue 20, findings 7 and 11): odd job ids, an unknown job type on disk,
Redis down at ``POST /jobs``, and a full disk at ``/setup`` and ``POST /jobs``; each now answers what
went wrong with a 4xx/5xx that says so."""

from __future__ import annotations

import base64
import errno
import json

import pytest
from active_learning_fakes import RecordingExecutor, connect, write_fake_weights
from segmentation_fakes import setup_body

from backend.app import create_app
from backend.components import Components
from backend.jobs.store import Job
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings

AUTH = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}


@pytest.fixture
def learning(tmp_path):
    settings = Settings(model_dir=tmp_path / "model_dir", extreme_weights=write_fake_weights(tmp_path / "default", 0.5),
                        basic_auth_user="ls", basic_auth_pass="pw")
    return Components(settings, segmenters=SegmenterSet(), images=object(), executor=RecordingExecutor())


@pytest.fixture
def client(learning):
    return create_app(components=learning).test_client()


@pytest.mark.parametrize("job_id", ["x" * 300, "%00", "a%00b", "..", "p7-%2e%2e%2fx", "-" * 255])
def test_a_job_id_that_names_no_job_is_404(client, job_id):
    assert client.get(f"/jobs/{job_id}", headers=AUTH).status_code == 404


def test_a_job_file_of_a_type_this_backend_does_not_know_leaves_jobs_readable(client, learning):
    known = learning.jobs.create("7", "test")
    stranger = Job(id="p7-bogus-20260101T000000-abcdef", project="7", trigger="a newer backend", type="bogus",
                   state="finished", result={"done": 3})
    (learning.jobs.layout.jobs_dir / f"{stranger.id}.json").write_text(json.dumps(stranger.to_json()))
    listed = client.get("/jobs", headers=AUTH)
    assert listed.status_code == 200
    assert [job["id"] for job in listed.get_json()["jobs"]] == [known.id, stranger.id]
    assert client.get(f"/jobs/{stranger.id}", headers=AUTH).get_json()["type"] == "bogus"
    assert client.get("/", headers=AUTH).status_code == 200
    assert stranger.kind == "bogus"


def test_post_jobs_with_redis_down_is_503_and_queues_nothing(client, learning, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    def unreachable(job):
        raise RedisConnectionError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(learning.executor, "submit", unreachable)
    answer = client.post("/jobs", json={"type": "preannotate", "project": 7}, headers=AUTH)
    assert answer.status_code == 503 and "Redis" in answer.get_json()["error"]
    assert learning.jobs.list() == []


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_at_setup_and_post_jobs_is_507_with_a_message(client, monkeypatch):
    import backend.files

    monkeypatch.setattr(backend.files.os, "replace", no_space)
    for answer in (client.post("/setup", json=setup_body(), headers=AUTH),
                   client.post("/jobs", json={"type": "preannotate", "project": 7}, headers=AUTH)):
        assert answer.status_code == 507, answer.get_json()
        assert "disk" in answer.get_json()["error"] and "MODEL_DIR" in answer.get_json()["error"]


def test_a_full_disk_at_a_webhook_is_507_not_400(client, learning, monkeypatch):
    connect(learning.settings, 7)
    monkeypatch.setattr(learning.retraining.pending, "record", no_space)
    answer = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 7},
                                           "annotation": {"id": 1, "task": 2, "project": 7, "result": []}})
    assert answer.status_code == 507 and "disk" in answer.get_json()["error"]
