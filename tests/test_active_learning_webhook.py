"""The webhook through the real Flask app: fast answers, bursts debounced into one job, /jobs."""

from __future__ import annotations

import logging
import time

import pytest
from active_learning_fakes import RecordingExecutor, write_fake_weights

from backend.components import Components
from backend.app import create_app
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings

BRUSH = {"type": "brushlabels", "from_name": "mask", "to_name": "image",
         "value": {"format": "rle", "rle": [0, 1], "brushlabels": ["Cat"]}}
PROJECT = {"id": 5, "title": "cats", "token": "project-secret-token", "task_data_password": "pw-secret"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def setup(tmp_path):
    weights = write_fake_weights(tmp_path / "default", 0.5)
    settings = Settings(model_dir=tmp_path / "model_dir", extreme_weights=weights,
                        train_min_new_annotations=10, train_debounce_s=5.0)
    clock, executor = Clock(), RecordingExecutor()
    learning = Components(settings, segmenters=SegmenterSet(), images=object(), executor=executor, clock=clock)
    app = create_app(components=learning)
    return app.test_client(), learning, executor, clock


def annotation_event(annotation_id: int) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": PROJECT, "task": {"id": annotation_id, "data": {}},
            "annotation": {"id": annotation_id, "task": annotation_id, "project": 5, "was_cancelled": False,
                           "result": [BRUSH]}}


def test_a_burst_of_100_webhooks_is_answered_fast_and_yields_one_job(setup, caplog):
    caplog.set_level(logging.DEBUG)  # every line the backend logs, INFO and DEBUG included
    client, learning, executor, clock = setup
    slowest = 0.0
    for annotation_id in range(100):
        started = time.perf_counter()
        response = client.post("/webhook", json=annotation_event(annotation_id))
        slowest = max(slowest, time.perf_counter() - started)
        assert response.status_code == 200
        clock.now += 0.05  # 20 saves per second
    assert slowest < 1.0
    assert response.get_json()["new_annotations"] == 100
    learning.dispatcher.tick()
    assert executor.submitted == []  # the burst just ended: still debouncing
    clock.now += 5.0
    learning.dispatcher.tick()
    learning.dispatcher.tick()
    assert len(executor.submitted) == 1 and [j.trigger for j in learning.jobs.list()] == ["100 new annotations"]
    assert "POST /webhook 200" in caplog.text and "queued training job" in caplog.text  # the log was captured
    assert "project-secret-token" not in caplog.text and "pw-secret" not in caplog.text


def test_start_training_queues_a_job_at_once_and_jobs_lists_it(setup):
    client, learning, executor, clock = setup
    client.post("/webhook", json=annotation_event(1))
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).get_json()
    assert answer["job"] == executor.submitted[0]
    again = client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).get_json()
    assert again["job"] == answer["job"] and len(executor.submitted) == 1  # still queued: no second job
    jobs = client.get("/jobs?project=5").get_json()["jobs"]
    assert [(j["id"], j["state"], j["project"]) for j in jobs] == [(answer["job"], "queued", "5")]
    assert client.get(f"/jobs/{answer['job']}").get_json()["trigger"].startswith("START_TRAINING")
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/jobs?state=bogus").status_code == 400


def test_other_events_are_acknowledged_and_bad_training_events_rejected(setup):
    client, learning, executor, clock = setup
    ignored = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": PROJECT})
    assert ignored.status_code == 200 and ignored.get_json()["training"] == "ignored"
    bad = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": PROJECT})
    assert bad.status_code == 400 and "annotations" in bad.get_json()["error"]
    assert "project-secret-token" not in bad.get_data(as_text=True)
