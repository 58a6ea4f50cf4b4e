"""The webhook through the real Flask app: fast answers, bursts debounced into one job, /jobs."""

from __future__ import annotations

import logging
import time

import pytest
from active_learning_fakes import RecordingExecutor, connect, write_fake_weights

from backend.active_learning.events import MAX_EVENT_ANNOTATIONS, EventEffect
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
    connect(settings, PROJECT["id"])
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


STRANGER = {"id": 6, "title": "never connected", "token": "stranger-secret-token"}


def test_training_events_for_a_project_without_setup_record_and_queue_nothing(setup, caplog):
    caplog.set_level(logging.INFO)
    client, learning, executor, clock = setup
    annotations = [annotation_event(n)["annotation"] | {"project": 6} for n in range(12)]
    events = [
        {"action": "ANNOTATION_CREATED", "project": STRANGER, "annotation": annotations[0]},
        {"action": "ANNOTATION_UPDATED", "project": STRANGER, "annotation": annotations[1]},
        {"action": "ANNOTATIONS_CREATED", "project": STRANGER, "annotation": annotations},
        {"action": "ANNOTATIONS_DELETED", "project": STRANGER, "annotations": [{"id": 1}]},
        {"action": "START_TRAINING", "project": STRANGER},
    ]
    for event in events:
        answer = client.post("/webhook", json=event)
        assert answer.status_code == 200 and answer.get_json()["training"] == "not connected", answer.get_json()
        assert "job" not in answer.get_json()
    clock.now += 60.0
    learning.dispatcher.tick()
    assert executor.submitted == [] and learning.jobs.list() == []
    assert not learning.retraining.pending.layout.project_dir("6").exists()  # nothing recorded on disk
    lines = [record.getMessage() for record in caplog.records if "sent no /setup" in record.getMessage()]
    assert len(lines) == len(events) and all("project 6" in line for line in lines)
    assert "stranger-secret-token" not in caplog.text


def test_pending_changes_of_a_project_without_setup_left_by_an_earlier_version_start_no_job(setup):
    client, learning, executor, clock = setup
    for project in ("6", "5"):
        learning.retraining.pending.record(EventEffect(project, added=frozenset(range(20))), clock.now)
    clock.now += 60.0
    learning.dispatcher.tick()
    assert [job.project for job in learning.jobs.list()] == ["5"]
    assert learning.retraining.pending.projects_with_changes() == []


def test_a_bulk_event_over_the_cap_is_counted_not_listed_and_the_job_trains_on_all(setup, caplog):
    caplog.set_level(logging.INFO)
    client, learning, executor, clock = setup
    total = MAX_EVENT_ANNOTATIONS + 500
    annotations = [annotation_event(n)["annotation"] for n in range(total)]
    answer = client.post("/webhook", json={"action": "ANNOTATIONS_CREATED", "project": PROJECT, "annotation": annotations})
    assert answer.status_code == 200 and answer.get_json()["new_annotations"] == total
    pending = learning.retraining.pending.read("5")
    assert len(pending.annotation_ids) == MAX_EVENT_ANNOTATIONS and pending.over_cap == 500
    assert f"lists 500 annotations more than the {MAX_EVENT_ANNOTATIONS} read: counted as new" in caplog.text
    deleted = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": PROJECT,
                                            "annotations": [{"id": n} for n in range(total)]})
    assert deleted.get_json()["new_annotations"] == 500  # the listed ones went; the counted rest still trains
    assert "not removed from the pending ones" in caplog.text
    clock.now += 5.0
    learning.dispatcher.tick()
    assert [job.trigger for job in learning.jobs.list()] == ["500 new annotations"]
